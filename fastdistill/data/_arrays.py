"""Array plumbing of :mod:`fastdistill.data`: input checks (numpy in -> numpy out, torch in -> torch out), and the
sources that stream a matrix in row chunks of bounded size (``.npy`` paths, read-only ``np.memmap``, iterables of
chunks) or hand it to Dask.

A read-only memmap (and a ``.npy`` path) is read with plain file reads into a fresh buffer per chunk rather than
through its mapping: pages touched through a mapping stay resident (and count in the process's RSS) until the
kernel reclaims them, so a 4 GB file walked through its mapping would end up 4 GB resident.
"""
from __future__ import annotations

import mmap
import os
import warnings
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

ArrayLike = Union[np.ndarray, Tensor]
CHUNK_BYTES = 16 << 20  # rows per chunk: about this many bytes of input
FLOATS = (np.float32, np.float64)


def is_dask(X: Any) -> bool:
    """Whether ``X`` is a Dask array (checked without importing Dask)."""
    return type(X).__module__.split(".")[0] == "dask" and hasattr(X, "map_blocks")


def is_chunked(X: Any) -> bool:
    """Whether ``X`` is read in chunks: a ``.npy`` path, an ``np.memmap``, a list/tuple of 2-D arrays or of
    ``(X, y)`` pairs, an iterator (read once), or any other iterable that is not array-like (read again on each
    ``iter()``)."""
    if isinstance(X, (str, os.PathLike, np.memmap)):
        return True
    if isinstance(X, (list, tuple)):
        return len(X) > 0 and all(isinstance(c, tuple) or (isinstance(c, (np.ndarray, Tensor)) and c.ndim == 2)
                                  for c in X)
    if isinstance(X, (np.ndarray, Tensor, dict)) or hasattr(X, "__array__") or hasattr(X, "shape"):
        return False
    return hasattr(X, "__iter__")


def as_tensor(a: np.ndarray) -> Tensor:
    """``a`` as a CPU tensor sharing its memory (read-only arrays too: nothing here writes into an input)."""
    if not a.flags.writeable:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
            return torch.from_numpy(a)
    return torch.from_numpy(a)


def to_kind(t: Tensor, torch_out: bool) -> ArrayLike:
    return t if torch_out else t.cpu().numpy()


def float_tensor(X: ArrayLike, dtype: torch.dtype = torch.float32) -> Tensor:
    """A contiguous tensor of ``dtype`` with X's values (X itself when it already is one)."""
    t = X if isinstance(X, Tensor) else as_tensor(np.asarray(X))
    return t.detach().to(dtype).contiguous()


def _torch_features(est: Any, t: Tensor, reset: bool) -> None:
    n_features = t.shape[1]
    if reset:
        est.n_features_in_ = n_features
        if hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
    elif n_features != est.n_features_in_:
        raise ValueError(f"X has {n_features} features, but {type(est).__name__} is expecting {est.n_features_in_} "
                         "features as input.")


def check_X(est: Any, X: Any, *, reset: bool, finite: bool = True, dtype: Sequence[type] = FLOATS
            ) -> Tuple[Tensor, bool]:
    """(X as a 2-D tensor, whether X was a torch tensor). Array-likes go through scikit-learn's ``validate_data``
    (its messages, ``n_features_in_``, ``feature_names_in_``); tensors get the same checks here. Integer input
    becomes ``dtype[0]``; ``finite`` rejects NaN and inf."""
    if isinstance(X, Tensor):
        if X.dim() != 2:
            raise ValueError(f"X: expected a 2-D tensor (samples, features), got shape {tuple(X.shape)}")
        if X.is_complex() or X.dtype == torch.bool:
            raise TypeError(f"X: expected a real numeric tensor, got {X.dtype}")
        t = X.detach()
        want = [getattr(torch, np.dtype(d).name) for d in dtype]
        if t.dtype not in want:
            t = t.to(want[0])
        if t.shape[0] < 1:
            raise ValueError(f"X: found array with 0 sample(s) (shape={tuple(t.shape)}) while a minimum of 1 is "
                             "required.")
        if t.shape[1] < 1:
            raise ValueError(f"X: found array with 0 feature(s) (shape={tuple(t.shape)}) while a minimum of 1 is "
                             "required.")
        if finite and not bool(torch.isfinite(t).all()):
            raise ValueError("Input X contains NaN or infinity.")
        _torch_features(est, t, reset)
        return t, True
    from sklearn.utils.validation import validate_data

    arr = validate_data(est, X, reset=reset, dtype=list(dtype), ensure_all_finite=finite)
    return as_tensor(arr), False


def check_y(y: Any, n: int, name: str = "y") -> np.ndarray:
    """``y`` as a 1-D numpy array of ``n`` labels/targets."""
    a = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of {n} labels, got shape {a.shape}")
    if len(a) != n:
        raise ValueError(f"{name}: expected {n} labels (one per sample), got {len(a)}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or infinity")
    return a


# ------------------------------------------------------------------------------------------------ chunked sources


def rows_per_chunk(n_features: int, itemsize: int, chunk_rows: Optional[int]) -> int:
    if chunk_rows is not None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows: expected a positive row count, got {chunk_rows}")
        return int(chunk_rows)
    return max(1, CHUNK_BYTES // max(1, n_features * itemsize))


def _npy_layout(path: Union[str, os.PathLike]) -> Tuple[Tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a C-ordered ``.npy`` file."""
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(fh)
        except ValueError as exc:
            raise ValueError(f"X: {os.fspath(path)} is not a .npy file ({exc})") from None
        if fortran and len(shape) > 1:
            raise ValueError(f"X: {os.fspath(path)} is stored in Fortran order; expected C order")
        return shape, dtype, fh.tell()


def _file_rows(path: str, offset: int, dtype: np.dtype, n: int, d: int, rows: int) -> Iterator[np.ndarray]:
    with open(path, "rb") as fh:
        fh.seek(offset)
        for r0 in range(0, n, rows):
            buf = np.empty((min(rows, n - r0), d), dtype=dtype)
            view = memoryview(buf).cast("B")
            got = 0
            while got < len(view):
                k = fh.readinto(view[got:])
                if not k:
                    raise ValueError(f"X: {path} ended after {r0 * d * dtype.itemsize + got} data bytes; expected "
                                     f"{n * d * dtype.itemsize} (truncated file)")
                got += k
            yield buf


class Chunks:
    """A matrix read as consecutive row chunks ``(X_chunk, y_chunk or None)`` in bounded memory.

    ``X`` is a ``.npy`` path, an ``np.memmap`` (or any 2-D array, sliced), an iterator of chunks, a list of
    chunks, or an iterable whose every ``iter()`` reads the chunks afresh (it may tell its row count as
    ``n_rows``); a chunk is a 2-D array or an ``(X, y)`` pair. ``y`` (for paths and arrays) is sliced alongside.
    ``reiterable`` says whether the rows can be read again (an iterator is read once).
    """

    def __init__(self, X: Any, y: Any = None, chunk_rows: Optional[int] = None):
        self._source: Callable[[], Iterator[Tuple[Any, Any]]]
        self.n_rows: Optional[int] = None
        if isinstance(X, (str, os.PathLike)):
            shape, dtype, offset = _npy_layout(X)
            path = os.fspath(X)
            self._init_file(path, offset, dtype, shape, y, chunk_rows)
        elif isinstance(X, np.ndarray):
            if X.ndim != 2:
                raise ValueError(f"X: expected a 2-D array (samples, features), got shape {X.shape}")
            if isinstance(X, np.memmap) and isinstance(X.base, mmap.mmap) and X.flags.c_contiguous \
                    and not X.flags.writeable and X.filename:
                self._init_file(X.filename, X.offset, X.dtype, X.shape, y, chunk_rows)
            else:
                rows = rows_per_chunk(X.shape[1], X.itemsize, chunk_rows)
                yy = None if y is None else check_y(y, len(X))
                self.n_rows = len(X)
                self._source = lambda: ((np.asarray(X[i:i + rows]), None if yy is None else yy[i:i + rows])
                                        for i in range(0, len(X), rows))
            self.reiterable = True
        else:
            if y is not None:
                raise ValueError("y: pass the labels inside the chunks, as (X, y) pairs, when X is an iterable")
            if isinstance(X, (list, tuple)):
                items = list(X)
                self._source = lambda: (_pair(c) for c in items)
                self.reiterable = True
            elif hasattr(X, "__next__"):
                self._source = lambda: (_pair(c) for c in X)
                self.reiterable = False
            elif hasattr(X, "__iter__"):
                self._source = lambda: (_pair(c) for c in iter(X))
                self.reiterable = True
                self.n_rows = getattr(X, "n_rows", None)
            else:
                raise TypeError(f"X: expected an array, a .npy path or an iterable of chunks, got {type(X).__name__}")

    def _init_file(self, path: str, offset: int, dtype: np.dtype, shape: Tuple[int, ...], y: Any,
                   chunk_rows: Optional[int]) -> None:
        if len(shape) != 2:
            raise ValueError(f"X: {path} holds an array of shape {shape}; expected 2-D (samples, features)")
        if dtype.kind not in "biuf":
            raise ValueError(f"X: {path} holds {dtype} values; expected numbers")
        n, d = shape
        rows = rows_per_chunk(d, dtype.itemsize, chunk_rows)
        yy = None if y is None else check_y(y, n)
        self.n_rows = n
        self._source = lambda: ((c, None if yy is None else yy[i * rows:i * rows + len(c)])
                                for i, c in enumerate(_file_rows(path, offset, dtype, n, d, rows)))
        self.reiterable = True

    def __iter__(self) -> Iterator[Tuple[np.ndarray, Optional[np.ndarray]]]:
        return self._source()


def _pair(chunk: Any) -> Tuple[Any, Any]:
    if isinstance(chunk, tuple):
        if len(chunk) != 2:
            raise ValueError(f"X: a chunk tuple must be (X, y), got {len(chunk)} items")
        return chunk
    return chunk, None


def concat(parts: List[ArrayLike], torch_out: bool) -> ArrayLike:
    if torch_out:
        return torch.cat(parts) if parts else torch.empty(0)
    return np.concatenate(parts) if parts else np.empty(0)
