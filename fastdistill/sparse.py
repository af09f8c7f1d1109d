"""Sparse weights and sparse matmul: a pruned (out x in) weight stored as CSR over its rows, multiplied without
ever being densified.

Format (:class:`SparseWeight`), chosen for the CPU kernels and for compact files:

* ``indptr``: int64, ``out_features + 1`` row pointers;
* ``indices``: column index of each stored value, ``int16`` when ``in_features <= 65536`` (the 16 bits are read
  as *unsigned*: column 40000 is stored as the int16 with bit pattern 40000), else ``int32``;
* ``values``: float32 or bfloat16; or int8 codes with
* ``scale``: float32, one per row (None for float values): ``W[r, c] = scale[r] * codes[j]``.

A 90%-sparse fp32 weight takes 10% x (4 + 2) bytes per element plus 8 bytes per row: 15% of dense (bf16 values: 10%,
int8 values 7.5%; files hold less, see :mod:`fastdistill.compress.io`).

int8 values (``from_dense(w, torch.int8)``) quantize each row symmetrically: ``scale[r] = max_c |w[r, c]| / 127``,
``codes = round(w / scale)`` (in [-127, 127]), so every stored entry is within ``scale[r] / 2`` of the original
(``|w - scale * code| <= max|w_row| / 254``, plus fp32 rounding of the product). Every nonzero is kept, even one
whose code rounds to 0, so the sparsity pattern is exactly that of ``w``.

Both matmuls accumulate in fp32 (for float32 activations: the native and Numba kernels; other activation dtypes
run on the torch reference). Results match a float64 product with the (dequantized) stored weight to about
``1e-5 * sum|w * x|`` per output; int8 kernels sum ``code * x`` and multiply the row's sum by its scale once.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch

from . import _ops
from ._convert import check_float, like_input, to_tensor
from .formats.csr import VALUE_DTYPES, check_components, check_scale, columns, dequantized

ArrayLike = Union[torch.Tensor, np.ndarray]


class SparseWeight:
    """A 2-D weight in CSR form (see the module docstring for the layout).

    Example::

        >>> w = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, -3.0]])
        >>> sw = fastdistill.SparseWeight.from_dense(w)
        >>> sw.nnz, sw.indices.dtype
        (3, torch.int16)
        >>> torch.equal(sw.to_dense(), w)
        True
        >>> q = fastdistill.SparseWeight.from_dense(w, torch.int8)  # int8 codes, one scale per row
        >>> q.values, q.scale
        (tensor([127, 42, -127], dtype=torch.int8), tensor([0.0157, 0.0236]))
    """

    __slots__ = ("indptr", "indices", "values", "scale", "shape")

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, shape: Tuple[int, int],
                 scale: Optional[torch.Tensor] = None):
        """Wraps existing CSR components (validated: dtypes, lengths, row pointers, column range; ``scale``, given
        exactly when ``values`` are int8, a finite float32 tensor of ``out_features`` entries)."""
        for name, t in (("indptr", indptr), ("indices", indices), ("values", values)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if len(shape) != 2 or any(isinstance(s, bool) or int(s) != s or s < 0 for s in shape):
            raise ValueError(f"shape: expected (out_features, in_features) of non-negative ints, got {shape!r}")
        rows, cols = int(shape[0]), int(shape[1])
        if indptr.dtype != torch.int64:
            raise TypeError(f"indptr: expected int64, got {indptr.dtype}")
        want_idx = torch.int16 if cols <= 65536 else torch.int32
        if indices.dtype != want_idx:
            raise TypeError(f"indices: expected {want_idx} for {cols} columns, got {indices.dtype}")
        if values.dtype not in VALUE_DTYPES:
            raise TypeError(f"values: expected float32, bfloat16 or int8, got {values.dtype}")
        if indptr.numel() != rows + 1:
            raise ValueError(f"indptr: expected {rows + 1} entries for {rows} rows, got {indptr.numel()}")
        check_scale(values, scale, rows)
        if len({t.device for t in (indptr, indices, values, scale) if t is not None}) > 1:
            raise ValueError("indptr, indices, values, scale: expected tensors on one device")
        check_components(indptr, columns(indices), values, cols)
        self.indptr, self.indices, self.values = indptr.contiguous(), indices.contiguous(), values.contiguous()
        self.scale = None if scale is None else scale.contiguous()
        self.shape = (rows, cols)

    @classmethod
    def _trusted(cls, indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, shape: Tuple[int, int],
                 scale: Optional[torch.Tensor] = None) -> "SparseWeight":
        """Wraps components already validated (by a SparseWeight they came from) without the O(nnz) checks."""
        obj = cls.__new__(cls)
        obj.indptr, obj.indices, obj.values, obj.scale, obj.shape = indptr, indices, values, scale, shape
        return obj

    @classmethod
    def from_dense(cls, w: ArrayLike, dtype: Optional[torch.dtype] = None) -> "SparseWeight":
        """CSR of the nonzero entries of a 2-D float weight. Exact for float ``dtype``: ``to_dense()`` equals ``w``
        bit for bit, except that a -0.0 (as left by ``w * mask``) is not stored and comes back as +0.0; NaN entries
        are stored.

        ``dtype``: value dtype, float32 or bfloat16; by default bfloat16 for a bfloat16 ``w`` and float32 for
        float32/float16 (exact widening). float64 weights need an explicit (rounding) ``dtype``. ``torch.int8``
        quantizes each row's nonzeros to int8 codes and a float32 scale (see the module docstring for the bound;
        ``w`` must then be finite).

        Example::

            >>> sw = fastdistill.SparseWeight.from_dense(torch.randn(64, 32) * (torch.rand(64, 32) > 0.9))
            >>> q = fastdistill.SparseWeight.from_dense(torch.randn(64, 32) * (torch.rand(64, 32) > 0.9), torch.int8)
        """
        t = to_tensor(w, "w")
        check_float(t, "w")
        if t.dim() != 2:
            raise ValueError(f"w: expected a 2-D (out_features, in_features) weight, got shape {tuple(t.shape)}")
        if dtype is None:
            if t.dtype == torch.float64:
                raise TypeError("w: float64 values would be rounded; pass dtype=torch.float32 to accept that")
            dtype = torch.bfloat16 if t.dtype == torch.bfloat16 else torch.float32
        if dtype not in VALUE_DTYPES:
            raise TypeError(f"dtype: expected torch.float32, torch.bfloat16 or torch.int8, got {dtype}")
        t = t.detach().to(torch.float32 if dtype == torch.int8 else dtype)
        keep = t != 0
        rows, cols = t.shape
        indptr = torch.zeros(rows + 1, dtype=torch.int64, device=t.device)
        torch.cumsum(keep.sum(dim=1), dim=0, out=indptr[1:])
        col = keep.nonzero()[:, 1]
        indices = col.to(torch.int32).to(torch.int16) if cols <= 65536 else col.to(torch.int32)
        if dtype != torch.int8:
            return cls(indptr, indices, t[keep], (rows, cols))
        if not bool(torch.isfinite(t).all()):
            raise ValueError("w: int8 values need a finite weight (it holds inf or NaN)")
        scale = (t.abs().amax(dim=1) if cols else t.new_zeros(rows)) / 127
        # Divide in float64 so that codes are the correctly rounded w / scale for the fp32 scale that is stored;
        # a zero scale (all-zero row, or a row of subnormals too small to scale) divides by 1: codes round to 0.
        divisor = torch.where(scale > 0, scale, torch.ones_like(scale)).double()
        row = torch.repeat_interleave(torch.arange(rows, device=t.device), indptr.diff(), output_size=col.numel())
        codes = torch.round(t[keep].double() / divisor[row]).clamp_(-127, 127).to(torch.int8)
        return cls(indptr, indices, codes, (rows, cols), scale)

    def to_dense(self) -> torch.Tensor:
        """The dense (out_features, in_features) weight, exactly (float32 ``scale * codes`` for int8 values)."""
        rows, cols = self.shape
        vals = self.values if self.scale is None else dequantized(self.indptr, self.values, self.scale)
        out = torch.zeros(self.shape, dtype=vals.dtype, device=vals.device)
        row = torch.repeat_interleave(torch.arange(rows, device=self.indptr.device), self.indptr.diff())
        out[row, columns(self.indices)] = vals
        return out

    @property
    def out_features(self) -> int:
        return self.shape[0]

    @property
    def in_features(self) -> int:
        return self.shape[1]

    @property
    def nnz(self) -> int:
        """Number of stored values."""
        return self.values.numel()

    @property
    def sparsity(self) -> float:
        """Fraction of entries not stored."""
        n = self.shape[0] * self.shape[1]
        return 1.0 - self.nnz / n if n else 0.0

    @property
    def dtype(self) -> torch.dtype:
        """The values' dtype (float32, bfloat16, or int8 for codes with a per-row ``scale``)."""
        return self.values.dtype

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def nbytes(self) -> int:
        """Bytes held by the component tensors (``scale`` included)."""
        parts = (self.indptr, self.indices, self.values) + (() if self.scale is None else (self.scale,))
        return sum(t.numel() * t.element_size() for t in parts)

    def to(self, device: Union[str, torch.device]) -> "SparseWeight":
        """A copy on ``device`` (self if already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return SparseWeight(self.indptr.to(device), self.indices.to(device), self.values.to(device), self.shape,
                            None if self.scale is None else self.scale.to(device))

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The components as plain tensors (``shape`` as an int64 tensor of 2; ``scale`` only for int8 values),
        e.g. for :func:`fastdistill.save`."""
        state = {"indptr": self.indptr, "indices": self.indices, "values": self.values,
                 "shape": torch.tensor(self.shape, dtype=torch.int64)}
        if self.scale is not None:
            state["scale"] = self.scale
        return state

    @classmethod
    def from_state_dict(cls, state: Dict[str, torch.Tensor]) -> "SparseWeight":
        """Inverse of :meth:`state_dict` (validates the components)."""
        missing = {"indptr", "indices", "values", "shape"} - set(state)
        if missing:
            raise ValueError(f"state: missing {sorted(missing)}")
        shape = state["shape"]
        if not isinstance(shape, torch.Tensor) or shape.shape != (2,) or shape.dtype != torch.int64:
            raise ValueError("state: 'shape' must be an int64 tensor of 2 entries")
        return cls(state["indptr"], state["indices"], state["values"], (int(shape[0]), int(shape[1])),
                   state.get("scale"))

    def __repr__(self) -> str:
        scale = "" if self.scale is None else ", scale=float32 per row"
        return (f"SparseWeight(shape={self.shape}, nnz={self.nnz}, sparsity={self.sparsity:.3f}, "
                f"values={self.values.dtype}{scale}, indices={self.indices.dtype}, device={self.device})")


def _call(op: str, x: torch.Tensor, *args: object) -> torch.Tensor:
    """Op ``op`` on ``args``, ``x`` being its activation, with autograd when a gradient must flow to ``x``."""
    return _ops.call(op, *args, autograd=x.requires_grad and torch.is_grad_enabled())


def _check_weight(w_sparse: object) -> SparseWeight:
    if not isinstance(w_sparse, SparseWeight):
        raise TypeError(f"w_sparse: expected a fastdistill.SparseWeight, got {type(w_sparse).__name__}")
    return w_sparse


def sparse_linear(x: ArrayLike, w_sparse: SparseWeight, bias: Optional[ArrayLike] = None) -> ArrayLike:
    """``x @ W^T + bias`` for x of shape (..., in_features): the sparse counterpart of ``F.linear``.

    Example::

        >>> sw = fastdistill.SparseWeight.from_dense(torch.randn(8, 16) * (torch.rand(8, 16) > 0.9))
        >>> fastdistill.sparse_linear(torch.randn(4, 16), sw).shape
        torch.Size([4, 8])
    """
    w = _check_weight(w_sparse)
    t = to_tensor(x)
    check_float(t)
    if t.dim() == 0 or t.shape[-1] != w.in_features:
        raise ValueError(f"x: expected shape (..., {w.in_features}), got {tuple(t.shape)}")
    if t.device != w.device:
        raise ValueError(f"x: on {t.device} but w_sparse is on {w.device}")
    b = None
    if bias is not None:
        b = to_tensor(bias, "bias")
        check_float(b, "bias")
        if b.shape != (w.out_features,):
            raise ValueError(f"bias: expected shape ({w.out_features},), got {tuple(b.shape)}")
        b = b.detach().to(device=t.device, dtype=torch.float32 if t.dtype == torch.float32 else b.dtype)
    x2 = t.reshape(math.prod(t.shape[:-1]), w.in_features).contiguous()
    out = _call("sparse_linear", x2, x2, w.indptr, w.indices, w.values, w.in_features,
                None if b is None else b.contiguous(), w.scale)
    return like_input(out.reshape(*t.shape[:-1], w.out_features), x)


def spmm(w_sparse: SparseWeight, x: ArrayLike) -> ArrayLike:
    """``W @ x`` for x of shape (in_features, M) or (in_features,).

    Example::

        >>> sw = fastdistill.SparseWeight.from_dense(torch.eye(3))
        >>> fastdistill.spmm(sw, torch.ones(3, 2))
        tensor([[1., 1.],
                [1., 1.],
                [1., 1.]])
    """
    w = _check_weight(w_sparse)
    t = to_tensor(x)
    check_float(t)
    if t.dim() not in (1, 2) or t.shape[0] != w.in_features:
        raise ValueError(f"x: expected shape ({w.in_features},) or ({w.in_features}, M), got {tuple(t.shape)}")
    if t.device != w.device:
        raise ValueError(f"x: on {t.device} but w_sparse is on {w.device}")
    b = t.reshape(w.in_features, t.shape[1] if t.dim() == 2 else 1).contiguous()
    out = _call("spmm", b, w.indptr, w.indices, w.values, w.in_features, b, w.scale)
    return like_input(out.reshape(w.out_features, *t.shape[1:]), x)
