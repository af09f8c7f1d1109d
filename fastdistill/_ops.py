"""Every fastdistill op, declared once as a ``torch.library`` custom op: schema, fake (meta) implementation, and an
implementation that routes to the chosen backend (:mod:`fastdistill._dispatch`).

Declaring ops this way lets ``torch.compile(fullgraph=True)`` trace through them and ``torch.library.opcheck`` test
them. The implementations here only normalise layout (backends receive contiguous tensors) and restore it.
"""
from __future__ import annotations

from typing import List, Tuple

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
# Quantization (rows of a (rows, length) float tensor, one scale and zero point per row; see quantization.py)
# --------------------------------------------------------------------------------------------------------------


@torch.library.custom_op("fastdistill::quantize", mutates_args=())
def quantize(x: Tensor, bits: int, scheme: str, method: str, percentile: float) -> Tuple[Tensor, Tensor, Tensor]:
    """(codes, scale, zero_point) of the 2-D float ``x``: codes (rows, row_bytes) int8/uint8 (packed below 8 bits),
    scale (rows,) float32, zero_point (rows,) int32."""
    return dispatch("quantize", x.contiguous(), bits, scheme, method, percentile)


@quantize.register_fake
def _(x: Tensor, bits: int, scheme: str, method: str, percentile: float) -> Tuple[Tensor, Tensor, Tensor]:
    from .backends.reference.quant import code_dtype, row_bytes

    rows, length = x.shape
    codes = x.new_empty((rows, row_bytes(length, bits)), dtype=code_dtype(bits, scheme))
    return codes, x.new_empty((rows,), dtype=torch.float32), x.new_empty((rows,), dtype=torch.int32)


@torch.library.custom_op("fastdistill::dequantize", mutates_args=())
def dequantize(codes: Tensor, scale: Tensor, zero_point: Tensor, bits: int, scheme: str, length: int) -> Tensor:
    """(rows, length) float32 values of the codes made by :func:`quantize`."""
    return dispatch("dequantize", codes.contiguous(), scale.contiguous(), zero_point.contiguous(), bits, scheme,
                    length)


@dequantize.register_fake
def _(codes: Tensor, scale: Tensor, zero_point: Tensor, bits: int, scheme: str, length: int) -> Tensor:
    return codes.new_empty((codes.shape[0], length), dtype=torch.float32)


@torch.library.custom_op("fastdistill::dequantize_into", mutates_args=("out",))
def dequantize_into(codes: Tensor, scale: Tensor, zero_point: Tensor, bits: int, scheme: str, out: Tensor) -> None:
    """:func:`dequantize` written into the contiguous float32 ``out`` (rows, length): no fresh output memory."""
    dispatch("dequantize_into", codes.contiguous(), scale.contiguous(), zero_point.contiguous(), bits, scheme, out)


@dequantize_into.register_fake
def _(codes: Tensor, scale: Tensor, zero_point: Tensor, bits: int, scheme: str, out: Tensor) -> None:
    return None
