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
# int8 matrix multiply and dynamic-quantization linear layer
# --------------------------------------------------------------------------------------------------------------


@torch.library.custom_op("fastdistill::int8_mm", mutates_args=())
def int8_mm(a: Tensor, b: Tensor) -> Tensor:
    """int8 (M x K) @ int8 (K x N) -> int32 (M x N), exact (int32 sums wrap modulo 2^32)."""
    return dispatch("int8_mm", a.contiguous(), b.contiguous())


@int8_mm.register_fake
def _(a: Tensor, b: Tensor) -> Tensor:
    return a.new_empty((a.shape[0], b.shape[1]), dtype=torch.int32)


@torch.library.custom_op("fastdistill::int8_mm_packed", mutates_args=())
def int8_mm_packed(a: Tensor, codes: Tensor, packed: Tensor, comp: Tensor) -> Tensor:
    """int8 ``a`` (M x K) @ ``codes.T`` -> int32 (M x N); ``packed``/``comp``: codes in the native kernel's layout."""
    return dispatch("int8_mm_packed", a.contiguous(), codes, packed, comp)


@int8_mm_packed.register_fake
def _(a: Tensor, codes: Tensor, packed: Tensor, comp: Tensor) -> Tensor:
    return a.new_empty((a.shape[0], codes.shape[0]), dtype=torch.int32)


@torch.library.custom_op("fastdistill::int8_linear", mutates_args=())
def int8_linear(x: Tensor, codes: Tensor, wscale: Tensor, packed: Tensor, comp: Tensor,
                bias: Optional[Tensor]) -> Tensor:
    """fp32 (M x N): ``x`` (M x K fp32/bf16) quantized per row, times int8 ``codes.T``, dequantized, + bias."""
    return dispatch("int8_linear", x.contiguous(), codes, wscale, packed, comp, bias)


@int8_linear.register_fake
def _(x: Tensor, codes: Tensor, wscale: Tensor, packed: Tensor, comp: Tensor, bias: Optional[Tensor]) -> Tensor:
    return x.new_empty((x.shape[0], codes.shape[0]), dtype=torch.float32)
