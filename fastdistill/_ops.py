"""Every fastdistill op, declared once as a ``torch.library`` custom op: schema, fake (meta) implementation, and an
implementation that routes to the chosen backend (:mod:`fastdistill._dispatch`).

Declaring ops this way lets ``torch.compile(fullgraph=True)`` trace through them and ``torch.library.opcheck`` test
them. The implementations here only normalise layout (backends receive contiguous tensors) and restore it.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from ._dispatch import dispatch

# --------------------------------------------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------------------------------------------


@torch.library.custom_op("fastdistill::magnitude_threshold", mutates_args=())
def magnitude_threshold(xs: List[Tensor], k: int) -> Tensor:
    """0-d float32 (float64 if any input is float64): the k-th smallest |x| over all ``xs``; -inf when k == 0."""
    return dispatch("magnitude_threshold", [x.contiguous() for x in xs], k)


@magnitude_threshold.register_fake
def _(xs: List[Tensor], k: int) -> Tensor:
    dtype = torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32
    return xs[0].new_empty((), dtype=dtype)


@torch.library.custom_op("fastdistill::magnitude_masks", mutates_args=())
def magnitude_masks(xs: List[Tensor], k: int) -> List[Tensor]:
    """Keep-masks (bool, True = kept) that prune the k smallest |x| over all ``xs`` together."""
    masks = dispatch("magnitude_masks", [x.contiguous() for x in xs], k)
    return [_like(m, x) for m, x in zip(masks, xs)]


@magnitude_masks.register_fake
def _(xs: List[Tensor], k: int) -> List[Tensor]:
    return [torch.empty_like(x, dtype=torch.bool) for x in xs]


@torch.library.custom_op("fastdistill::magnitude_prune_", mutates_args=("x",))
def magnitude_prune_(x: Tensor, k: int) -> Tensor:
    """Zeroes the k smallest |x| in place; returns the keep-mask."""
    work = x if x.is_contiguous() else x.contiguous()
    mask = dispatch("magnitude_prune_", work, k)
    if work is not x:
        x.copy_(work)
    return _like(mask, x)


@magnitude_prune_.register_fake
def _(x: Tensor, k: int) -> Tensor:
    return torch.empty_like(x, dtype=torch.bool)


@torch.library.custom_op("fastdistill::nm_mask", mutates_args=())
def nm_mask(x: Tensor, n: int, m: int) -> Tensor:
    """N:M keep-mask over consecutive groups of ``m`` elements along the last dimension of ``x``."""
    return _like(dispatch("nm_mask", x.contiguous(), n, m), x)


@nm_mask.register_fake
def _(x: Tensor, n: int, m: int) -> Tensor:
    return torch.empty_like(x, dtype=torch.bool)


def _like(result: Tensor, x: Tensor) -> Tensor:
    """``result`` (contiguous, x's shape) in x's memory layout, as the fake implementations promise."""
    if x.is_contiguous():
        return result
    out = torch.empty_like(x, dtype=result.dtype)
    out.copy_(result)
    return out


# --------------------------------------------------------------------------------------------------------------
# Sparse (CSR) matmul. The weight travels as its CSR components (see fastdistill.sparse.SparseWeight): indptr
# int64 (rows + 1), indices int16 (unsigned 16-bit column indices, used when cols <= 65536) or int32, values
# float32 or bfloat16. Outputs have x's dtype.
# --------------------------------------------------------------------------------------------------------------


@torch.library.custom_op("fastdistill::sparse_linear", mutates_args=())
def sparse_linear(
    x: Tensor, indptr: Tensor, indices: Tensor, values: Tensor, cols: int, bias: Optional[Tensor]
) -> Tensor:
    """x (M, cols) @ W^T + bias -> (M, rows)."""
    b = None if bias is None else bias.contiguous()
    return dispatch("sparse_linear", x.contiguous(), indptr.contiguous(), indices.contiguous(), values.contiguous(),
                    cols, b)


@sparse_linear.register_fake
def _(x: Tensor, indptr: Tensor, indices: Tensor, values: Tensor, cols: int, bias: Optional[Tensor]) -> Tensor:
    return x.new_empty((x.shape[0], indptr.shape[0] - 1))


@torch.library.custom_op("fastdistill::spmm", mutates_args=())
def spmm(indptr: Tensor, indices: Tensor, values: Tensor, cols: int, b: Tensor) -> Tensor:
    """W @ b for b (cols, M) -> (rows, M)."""
    return dispatch("spmm", indptr.contiguous(), indices.contiguous(), values.contiguous(), cols, b.contiguous())


@spmm.register_fake
def _(indptr: Tensor, indices: Tensor, values: Tensor, cols: int, b: Tensor) -> Tensor:
    return b.new_empty((indptr.shape[0] - 1, b.shape[1]))


def _sparse_linear_setup(ctx, inputs, output) -> None:
    x, indptr, indices, values, cols, bias = inputs
    ctx.save_for_backward(indptr, indices, values)
    ctx.cols = cols


def _sparse_linear_backward(ctx, grad: Tensor):
    """Gradient for x only (the CSR weight is not trainable): grad @ W = sparse_linear(grad, W^T), with W^T built
    as CSR by a stable sort of the nonzeros by column (static shapes, so it traces)."""
    from .backends._csr import columns  # backends import _ops' dispatch; keep the module graph acyclic

    indptr, indices, values = ctx.saved_tensors
    rows, nnz = indptr.numel() - 1, values.numel()
    col = columns(indices)
    row = torch.repeat_interleave(torch.arange(rows, device=indptr.device), indptr.diff(), output_size=nnz)
    order = torch.sort(col, stable=True).indices
    counts = torch.zeros(ctx.cols, dtype=torch.int64, device=indptr.device).index_add_(0, col, torch.ones_like(col))
    t_indptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    t_indices = row[order].to(torch.int32)
    t_indices = t_indices.to(torch.int16) if rows <= 65536 else t_indices
    grad_x = sparse_linear(grad.contiguous(), t_indptr, t_indices, values[order], rows, None)
    return grad_x, None, None, None, None, None


sparse_linear.register_autograd(_sparse_linear_backward, setup_context=_sparse_linear_setup)
