"""Shared machinery of the :mod:`fastdistill.data` estimators: fitting from per-chunk statistics (in memory, from a
chunked source, or reduced over a Dask array's blocks), transforming chunked and Dask inputs, and ``save``/``load``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import Tensor

from ._arrays import ArrayLike, Chunks, check_X, is_chunked, is_dask, rows_per_chunk

Stats = Dict[str, Any]
T = TypeVar("T")


def dask_blocks(X: Any, y: Any = None) -> Tuple[List[Any], List[Any]]:
    """The row blocks of the Dask array ``X`` (all columns in each) as delayed objects, and ``y``'s matching
    pieces (delayed, numpy slices, or None)."""
    X = X.rechunk({1: -1})
    xs = list(X.to_delayed().ravel())
    if y is None:
        return xs, [None] * len(xs)
    if is_dask(y):
        return xs, list(y.rechunk((X.chunks[0],)).to_delayed().ravel())
    y = np.asarray(y)
    bounds = np.cumsum((0,) + X.chunks[0])
    return xs, [y[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def map_reduce(fn: Callable[[Any, Any], T], merge: Callable[[T, T], T], X: Any, y: Any = None,
               chunk_rows: Optional[int] = None) -> T:
    """``fn(x_chunk, y_chunk)`` over every row chunk of ``X`` (a chunked input, a :class:`Source`, or a Dask array
    whose blocks run in parallel on Dask's scheduler), results combined in order with ``merge`` (associative)."""
    if is_dask(X) and not isinstance(X, Source):
        import dask

        xs, ys = dask_blocks(X, y)
        parts = [dask.delayed(fn)(xb, yb) for xb, yb in zip(xs, ys)]
        while len(parts) > 1:  # a tree of merges: log2(blocks) levels
            parts = [dask.delayed(merge)(a, b) for a, b in zip(parts[::2], parts[1::2])] + \
                (parts[-1:] if len(parts) % 2 else [])
        return dask.compute(parts[0])[0]
    result: Optional[T] = None
    for xc, yc in (X if isinstance(X, Source) else Chunks(X, y, chunk_rows)):
        r = fn(xc, yc)
        result = r if result is None else merge(result, r)
    if result is None:
        raise ValueError("X: no rows (the chunk source was empty)")
    return result


class Source:
    """The chunks ``(X_chunk, y_chunk)`` of a chunked input or of a Dask array (its blocks computed one at a
    time), iterable again when the input can be reread. Chunks read ahead with :meth:`peek` on a one-pass
    iterator are delivered again by the next iteration."""

    def __init__(self, X: Any, y: Any = None, chunk_rows: Optional[int] = None):
        if is_dask(X):
            self.n_rows: Optional[int] = int(X.shape[0])
            self.reiterable = True
            self._fresh = lambda: _dask_chunks(X, y)
        else:
            chunks = Chunks(X, y, chunk_rows)
            self.n_rows, self.reiterable = chunks.n_rows, chunks.reiterable
            self._fresh = chunks.__iter__
        self._ahead: List[Tuple[Any, Any]] = []
        self._it: Optional[Iterator[Tuple[Any, Any]]] = None

    def peek(self, enough: Callable[[List[Tuple[Any, Any]]], bool]) -> List[Tuple[Any, Any]]:
        """Chunks from the start until ``enough(chunks so far)`` or the end."""
        got: List[Tuple[Any, Any]] = []
        for chunk in self._fresh() if self.reiterable else self._one_pass():
            got.append(chunk)
            if enough(got):
                break
        if not self.reiterable:
            self._ahead = got + self._ahead
        return got

    def _one_pass(self) -> Iterator[Tuple[Any, Any]]:
        if self._it is None:
            self._it = self._fresh()
        while self._ahead:
            yield self._ahead.pop(0)
        yield from self._it

    def __iter__(self) -> Iterator[Tuple[Any, Any]]:
        return self._fresh() if self.reiterable else self._one_pass()


def _dask_chunks(X: Any, y: Any) -> Iterator[Tuple[np.ndarray, Optional[np.ndarray]]]:
    xs, ys = dask_blocks(X, y)
    for xb, yb in zip(xs, ys):
        yield xb.compute(), (None if yb is None else np.asarray(yb.compute() if hasattr(yb, "compute") else yb))


class DataCompressor(BaseEstimator):
    """Base of the data compressors: ``save``/``load`` in the library's pickle-free format, chunked and Dask
    inputs. Subclasses list the fitted attributes to persist in ``_persist``."""

    _persist: Tuple[str, ...] = ()

    def save(self, path: str) -> None:
        """Writes the fitted compressor to ``path`` (no pickle; see :func:`fastdistill.data.save`)."""
        from ._persist import save

        save(self, path)

    @classmethod
    def load(cls, path: str):
        """Reads a compressor written by :meth:`save`."""
        from ._persist import load

        obj = load(path)
        if not isinstance(obj, cls):
            raise ValueError(f"file: {path} holds a {type(obj).__name__}, not a {cls.__name__}")
        return obj

    # --- chunked / Dask inputs -----------------------------------------------------------------------------

    def _chunk_input(self, xc: Any, first: bool) -> Tensor:
        t, _ = check_X(self, xc, reset=first)
        return t

    def _transform_any(self, X: Any, one: Callable[[Any], ArrayLike], cols: Optional[int], dtype: Any,
                       chunk_rows: Optional[int] = None) -> Any:
        """Applies ``one`` (the in-memory transform, whose output has ``cols`` columns, or is 1-D when ``cols`` is
        None, of ``dtype``) to X: per block of a Dask array (a Dask array back), chunk by chunk into one output
        array for an ``np.memmap``, per chunk of an iterable or ``.npy`` path (a generator of outputs back).
        Returns None when X is an ordinary in-memory input."""
        if is_dask(X):
            X, dtype = X.rechunk({1: -1}), np.dtype(dtype)
            if cols is None:
                return X.map_blocks(one, dtype=dtype, drop_axis=1, meta=np.empty((0,), dtype))
            return X.map_blocks(one, dtype=dtype, chunks=(X.chunks[0], (cols,)), meta=np.empty((0, cols), dtype))
        if isinstance(X, np.memmap):
            if X.ndim != 2:
                raise ValueError(f"X: expected a 2-D array (samples, features), got shape {X.shape}")
            out = np.empty((len(X),) if cols is None else (len(X), cols), dtype=np.dtype(dtype))
            rows = rows_per_chunk(X.shape[1], X.itemsize, chunk_rows)
            for i in range(0, len(X), rows):
                out[i:i + rows] = one(np.asarray(X[i:i + rows]))
            return out
        if is_chunked(X):
            return _chunk_outputs(X, one, chunk_rows)
        return None


def _chunk_outputs(X: Any, one: Callable[[Any], ArrayLike], chunk_rows: Optional[int]) -> Iterator[ArrayLike]:
    for xc, _ in Chunks(X, None, chunk_rows):
        yield one(xc)


def merge_moments(a: Stats, b: Stats) -> Stats:
    """Chan's parallel update of (count, mean, centered scatter) statistics: ``n``, ``mean`` (d,) and ``m2``
    (d,) or (d, d); any other float64 entries are summed, ``min``/``max`` entries combined."""
    na, nb = a["n"], b["n"]
    if na == 0:
        return b
    if nb == 0:
        return a
    n = na + nb
    delta = b["mean"] - a["mean"]
    out = {"n": n, "mean": a["mean"] + delta * (nb / n)}
    if a["m2"].ndim == 2:
        out["m2"] = a["m2"] + b["m2"] + np.outer(delta, delta) * (na * nb / n)
    else:
        out["m2"] = a["m2"] + b["m2"] + delta * delta * (na * nb / n)
    for key in a:
        if key in out:
            continue
        if key.startswith("min"):
            out[key] = np.minimum(a[key], b[key])
        elif key.startswith("max"):
            out[key] = np.maximum(a[key], b[key])
        else:
            out[key] = a[key] + b[key]
    return out


def moments(x: Tensor, scatter: bool, block: int = 16384) -> Stats:
    """(n, mean, m2) of the rows of x in float64: m2 is the per-column sum of squared deviations, or the full
    (d, d) scatter matrix when ``scatter``. Rows go in blocks (merged by Chan's update) so the float64 temporaries
    stay small whatever the chunk."""
    out: Optional[Stats] = None
    for i in range(0, max(x.shape[0], 1), block):
        xd = x[i:i + block].double()
        mean = xd.mean(0) if xd.shape[0] else torch.zeros(x.shape[1], dtype=torch.float64)
        xc = xd - mean
        m2 = xc.T @ xc if scatter else (xc * xc).sum(0)
        part = {"n": int(xd.shape[0]), "mean": mean.cpu().numpy(), "m2": m2.cpu().numpy()}
        out = part if out is None else merge_moments(out, part)
    return out


def as_like(a: np.ndarray, t: Tensor) -> Tensor:
    """The numpy array ``a`` as a tensor on t's device with t's dtype."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(device=t.device, dtype=t.dtype)
