"""Data quantization: features to 8-bit (or narrower) integer codes with scales fitted on training data."""
from __future__ import annotations

import numbers
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
from sklearn.base import TransformerMixin
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from .. import _ops
from ._arrays import ArrayLike, Chunks, check_X, is_chunked, is_dask, to_kind
from ._base import DataCompressor, map_reduce

SCHEMES = ("asymmetric", "symmetric", "mean", "log", "gradient")
Stats = Dict[str, Any]


def _qmax(bits: int, scheme: str) -> int:
    return (1 << bits) - 1 if scheme == "asymmetric" else (1 << (bits - 1)) - 1


class DataQuantizer(TransformerMixin, DataCompressor):
    """Quantizes features to integer codes (one byte each) with scales fitted on training data and reused on new
    data; ``inverse_transform`` reconstructs.

    Schemes (per feature, or one set of parameters for all features when ``per_feature=False``):

    * ``"asymmetric"``: ``code = round((x - min) / scale)`` in ``[0, 2^bits - 1]`` (uint8), ``scale = (max - min) /
      (2^bits - 1)``; the fitted range is covered exactly, values outside it are clipped.
    * ``"symmetric"``: ``code = round(x / scale)`` in ``[-q, q]``, ``q = 2^(bits-1) - 1``, ``scale = max|x| / q``
      (int8).
    * ``"mean"``: divide by the fitted mean magnitude and round (the source method's mean quantization), as the
      library's ``scale_method="mean"``: ``scale = mean|x| * 2^(bits-1) / q``, codes clipped to ``[-q, q]`` (int8).
    * ``"log"``: ``sign(x) * m`` with ``m`` in ``[1, q]`` on a log2 grid from the smallest to the largest nonzero
      ``|x|`` seen in training (0 codes 0): relative, not absolute, error (int8).
    * ``"gradient"``: closed-loop delta codes of the first differences along ``axis`` (0: down the rows, a signal
      sampled over time; 1: along each row, a sequence per sample, with one pooled pair of scales), re-anchored
      every ``block`` samples by a code of the value itself, so a clipped step's error ends at the next anchor
      (int8). Decoding is a cumulative sum.

    Codes come from native kernels (one read of x, one write of the codes; the library's quantization rounding).
    Chunked inputs (``np.memmap``, ``.npy`` path, iterables of chunks), :meth:`partial_fit` and Dask arrays fit from
    per-chunk minima, maxima and sums.

    Parameters
    ----------
    bits : int in [2, 8]
    scheme : {"asymmetric", "symmetric", "mean", "log", "gradient"}
    per_feature : bool
    block : int
        Anchor spacing of ``"gradient"``.
    axis : {0, 1}
        Differencing axis of ``"gradient"``.

    Example::

        >>> q = DataQuantizer(8).fit(X_train)
        >>> codes = q.transform(X_test)                  # uint8, X_test's shape
        >>> X_back = q.inverse_transform(codes)
        >>> q.report(X_test)["rmse"]
    """

    _persist = ("scale_", "offset_", "step_scale_", "n_features_in_", "n_samples_seen_", "_stats")

    def __init__(self, bits: int = 8, scheme: str = "asymmetric", *, per_feature: bool = True, block: int = 64,
                 axis: int = 0, chunk_rows: Optional[int] = None):
        self.bits = bits
        self.scheme = scheme
        self.per_feature = per_feature
        self.block = block
        self.axis = axis
        self.chunk_rows = chunk_rows

    # --- fitting -------------------------------------------------------------------------------------------

    def _check_params(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, numbers.Integral) or not 2 <= self.bits <= 8:
            raise ValueError(f"bits: expected an int in [2, 8], got {self.bits!r}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme: expected one of {SCHEMES}, got {self.scheme!r}")
        if not isinstance(self.block, numbers.Integral) or self.block < 1:
            raise ValueError(f"block: expected a positive int, got {self.block!r}")
        if self.axis not in (0, 1):
            raise ValueError(f"axis: expected 0 or 1, got {self.axis!r}")

    def _chunk_stats(self, x: Tensor) -> Stats:
        """Per-column statistics of one chunk (float64 numpy), from one native pass over it."""
        xf = x.float().contiguous()
        mn, mx, sum_abs, max_abs, min_nonzero, max_step = _ops.call("column_stats", xf).numpy()
        s: Stats = {"n": int(x.shape[0]), "min": mn, "max": mx, "sum_abs": sum_abs, "max_abs": max_abs,
                    "min_nonzero": min_nonzero, "max_step": max_step}
        if self.scheme == "gradient" and self.axis == 1:  # one step scale for every position of the sequences
            step = float((xf[:, 1:] - xf[:, :-1]).abs().max()) if x.shape[0] and x.shape[1] > 1 else 0.0
            s["max_step"] = np.full(x.shape[1], step)
        elif x.shape[0]:  # consecutive chunks: the step between them is added when they are merged
            s["first"], s["last"] = xf[0].double().numpy(), xf[-1].double().numpy()
        return s

    @staticmethod
    def _merge(a: Stats, b: Stats) -> Stats:
        """Combines the statistics of consecutive chunks (a before b)."""
        out: Stats = {"n": a["n"] + b["n"]}
        for key in a:
            if key in ("n", "first", "last"):
                continue
            op = np.minimum if key.startswith("min") else np.maximum if key.startswith("max") else np.add
            out[key] = op(a[key], b[key])
        if "last" in a and "first" in b:
            step = np.abs(b["first"].astype(np.float32) - a["last"].astype(np.float32))  # (as the kernel: fp32)
            out["max_step"] = np.maximum(out["max_step"], step)
        for key, src in (("first", a if "first" in a else b), ("last", b if "last" in b else a)):
            if key in src:
                out[key] = src[key]
        return out

    def _block_stats(self, xc: Any, yc: Any) -> Stats:
        return self._chunk_stats(self._chunk_input(xc, first=not hasattr(self, "n_features_in_")).cpu())

    def fit(self, X: Any, y: Any = None) -> "DataQuantizer":
        """Fits the scales to X (array, tensor, ``np.memmap``, ``.npy`` path, iterable of chunks, Dask array)."""
        self._check_params()
        self.__dict__.pop("n_features_in_", None)
        if is_dask(X) or is_chunked(X):
            stats = map_reduce(self._block_stats, self._merge, X, chunk_rows=self.chunk_rows)
            self.n_features_in_ = len(next(v for k, v in stats.items() if k != "n"))
        else:
            x, _ = check_X(self, X, reset=True, finite=False)  # (the statistics pass rejects NaN and inf itself)
            stats = self._chunk_stats(x.cpu())
        return self._finish(stats)

    def partial_fit(self, X: ArrayLike, y: Any = None) -> "DataQuantizer":
        """Widens the fitted ranges (and means) with the rows of X."""
        self._check_params()
        first = not hasattr(self, "_stats")
        x, _ = check_X(self, X, reset=first)
        stats = self._chunk_stats(x.cpu())
        return self._finish(stats if first else self._merge(self._stats, stats))

    def _finish(self, s: Stats) -> "DataQuantizer":
        if s["n"] < 1:
            raise ValueError("X: no rows to fit the scales on")
        q = _qmax(self.bits, self.scheme)
        pooled = not self.per_feature or (self.scheme == "gradient" and self.axis == 1)
        pool = (lambda v, f: np.full_like(v, f(v))) if pooled else (lambda v, f: v)
        d = self.n_features_in_
        self.step_scale_ = None
        if self.scheme == "asymmetric":
            lo, hi = pool(s["min"], np.min), pool(s["max"], np.max)
            scale, offset = (hi - lo) / q, lo
        elif self.scheme == "symmetric":
            scale, offset = pool(s["max_abs"], np.max) / q, np.zeros(d)
        elif self.scheme == "mean":
            mean = s["sum_abs"] / s["n"]
            scale, offset = pool(mean, np.mean) * float(1 << (self.bits - 1)) / q, np.zeros(d)
        elif self.scheme == "log":
            top = pool(s["max_abs"], np.max)
            bottom = np.minimum(pool(s["min_nonzero"], np.min), top)
            lo = np.log2(np.where(np.isfinite(bottom) & (bottom > 0), bottom, 1.0))
            hi = np.log2(np.where(top > 0, top, 1.0))
            scale, offset = (hi - lo) / max(q - 1, 1), lo  # log2|x| grid: lo + (m - 1) * scale, m in [1, q]
        else:
            scale, offset = pool(s["max_abs"], np.max) / q, np.zeros(d)
            step = pool(s["max_step"], np.max) / q
            self.step_scale_ = _positive(step).astype(np.float32)
        self.scale_ = _positive(scale).astype(np.float32)
        self.offset_ = np.asarray(offset, dtype=np.float32)
        self.n_samples_seen_ = int(s["n"])
        self._stats = s
        return self

    # --- transforming --------------------------------------------------------------------------------------

    @property
    def code_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.scheme == "asymmetric" else np.int8)

    def transform(self, X: Any) -> Any:
        """Integer codes of X (uint8 for ``"asymmetric"``, int8 otherwise), X's shape and kind. Chunked inputs give
        a generator of code chunks (for ``"gradient"`` along axis 0, chunks are regrouped to whole blocks), Dask
        arrays a Dask array, an ``np.memmap`` one array."""
        check_is_fitted(self, "scale_")
        gradient_rows = self.scheme == "gradient" and self.axis == 0
        if is_dask(X) and gradient_rows:  # every Dask block must start at an anchor
            X = X.rechunk({0: _multiple(X.chunks[0][0], self.block), 1: -1})
        elif is_chunked(X) and not isinstance(X, np.memmap) and gradient_rows:
            return (self.transform(c) for c in _reblock(Chunks(X, None, self.chunk_rows), self.block))
        out = self._transform_any(X, self.transform, self.n_features_in_, self.code_dtype,
                                  None if not gradient_rows or self.chunk_rows is None
                                  else _multiple(self.chunk_rows, self.block))
        if out is not None:
            return out
        x, torch_out = check_X(self, X, reset=False, finite=False)
        x = x.float().contiguous()
        scale, offset = self._params(x.device)
        q = _qmax(self.bits, self.scheme)
        if self.scheme == "asymmetric":
            codes = _ops.call("quantize_columns", x, scale, offset, 0, q)
        elif self.scheme in ("symmetric", "mean"):
            codes = _ops.call("quantize_columns", x, scale, offset, -q, q)
        elif self.scheme == "log":
            mag = torch.log2(x.abs().clamp_min(np.finfo(np.float32).tiny))
            m = _ops.call("quantize_columns", mag, scale, offset - scale, 1, q)
            codes = torch.where(x == 0, 0, torch.where(x < 0, -m.to(torch.int16), m.to(torch.int16))).to(torch.int8)
        else:
            anchor, step = self._delta_scales(x.shape[0], x.device)
            seq = x if self.axis == 0 else x.T.contiguous()
            codes = _ops.call("delta_encode", seq, anchor, step, self.block, q)
            codes = codes if self.axis == 0 else codes.T.contiguous()
        return to_kind(codes, torch_out)

    def inverse_transform(self, codes: Any) -> Any:
        """float32 values of the codes."""
        check_is_fitted(self, "scale_")
        c, torch_out = _as_codes(codes, self.n_features_in_, self.code_dtype)
        scale, offset = self._params(c.device)
        if self.scheme in ("asymmetric", "symmetric", "mean"):
            x = _ops.call("dequantize_columns", c, scale, offset)
        elif self.scheme == "log":
            m = c.to(torch.int16).abs().to(torch.int8)
            mag = torch.exp2(_ops.call("dequantize_columns", m, scale, offset - scale))
            x = torch.where(c == 0, 0.0, torch.where(c < 0, -mag, mag))
        else:
            anchor, step = self._delta_scales(c.shape[0], c.device)
            seq = c if self.axis == 0 else c.T.contiguous()
            x = _ops.call("delta_decode", seq, anchor, step, self.block)
            x = x if self.axis == 0 else x.T.contiguous()
        return to_kind(x, torch_out)

    def _params(self, device: torch.device) -> Tuple[Tensor, Tensor]:
        return torch.from_numpy(self.scale_).to(device), torch.from_numpy(self.offset_).to(device)

    def _delta_scales(self, n: int, device: torch.device) -> Tuple[Tensor, Tensor]:
        """Anchor and step scales per column of the differenced matrix: the features (axis 0), or the n samples
        (axis 1: the sequences run along the rows, one pooled scale)."""
        anchor, step = torch.from_numpy(self.scale_).to(device), torch.from_numpy(self.step_scale_).to(device)
        if self.axis == 0:
            return anchor, step
        return anchor.new_full((n,), float(anchor[0])), step.new_full((n,), float(step[0]))

    def report(self, X: ArrayLike) -> Dict[str, float]:
        """Reconstruction error on X and the bytes before/after: ``rmse``, ``max_abs_error``, ``relative_rmse``
        (rmse over the standard deviation of X), ``bytes_in``, ``bytes_out`` (one byte per code)."""
        x = X if isinstance(X, Tensor) else torch.from_numpy(np.asarray(X))
        back = self.inverse_transform(self.transform(x)).double()
        err = back - x.double()
        rmse = float(torch.sqrt((err * err).mean())) if err.numel() else 0.0
        std = float(x.double().std()) if x.numel() > 1 else 0.0
        return {"rmse": rmse, "max_abs_error": float(err.abs().max()) if err.numel() else 0.0,
                "relative_rmse": rmse / std if std > 0 else 0.0, "bytes_in": int(x.numel() * x.element_size()),
                "bytes_out": int(x.numel())}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []
        return tags


def _positive(scale: np.ndarray) -> np.ndarray:
    """Scales as float32 > 0: a zero (constant column) or underflowing scale becomes 1 (every code is then the
    same, and decodes to the offset)."""
    s = np.asarray(scale, dtype=np.float64)
    return np.where((s > np.finfo(np.float32).tiny) & np.isfinite(s), s, 1.0)


def _multiple(rows: int, block: int) -> int:
    return max(block, (rows + block - 1) // block * block)


def _reblock(chunks: Chunks, block: int) -> Iterator[np.ndarray]:
    """The rows of the chunks regrouped into pieces whose lengths are multiples of ``block`` (the last one
    excepted), so each piece starts at an anchor of the gradient codes."""
    pending: list = []
    held = 0
    for xc, _ in chunks:
        xc = np.asarray(xc.detach().cpu().numpy() if isinstance(xc, Tensor) else xc)
        pending.append(xc)
        held += len(xc)
        if held >= block:
            rows = np.concatenate(pending)
            cut = held // block * block
            yield rows[:cut]
            pending, held = [rows[cut:]], held - cut
    if held:
        yield np.concatenate(pending)


def _as_codes(codes: Any, d: int, dtype: np.dtype) -> Tuple[Tensor, bool]:
    torch_in = isinstance(codes, Tensor)
    c = codes.detach() if torch_in else torch.from_numpy(np.ascontiguousarray(codes))
    if c.dim() != 2 or c.shape[1] != d:
        raise ValueError(f"codes: expected shape (n, {d}), got {tuple(c.shape)}")
    want = getattr(torch, dtype.name)
    if c.dtype != want:
        raise TypeError(f"codes: expected {dtype.name} codes (what transform returns), got {c.dtype}")
    return c.contiguous(), torch_in
