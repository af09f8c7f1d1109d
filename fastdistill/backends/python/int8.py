"""Reference int8 kernels in plain torch: the exact int32 product, and dynamic per-row quantization + dequantization.

Quantization rule shared by every backend (per row of x): ``scale = absmax / 127`` in fp32,
``q = clamp(round_half_even(x / scale), -127, 127)`` (``q = 0`` where ``scale == 0``). The linear layer's output is
``float(q @ codes.T) * scale[:, None] * wscale[None, :] + bias``. Integer sums are int32 and wrap modulo 2^32, so
``int8_mm`` is exact whenever the true product fits in int32 (always for K <= 131072).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..._dispatch import register_kernel

DEVICES = ("cpu", "cuda")


def _int_mm_allowed(a: Tensor, b: Tensor) -> bool:
    """Whether torch._int_mm accepts these shapes: anything non-empty on CPU; M > 16 and K, N multiples of 8 on CUDA."""
    m, k = a.shape
    n = b.shape[1]
    if min(m, k, n) == 0:
        return False
    return a.device.type == "cpu" or (m > 16 and k % 8 == 0 and n % 8 == 0)


def mm(a: Tensor, b: Tensor) -> Tensor:
    """int8 (M x K) @ int8 (K x N) -> int32, exact modulo 2^32."""
    if _int_mm_allowed(a, b):
        return torch._int_mm(a, b)
    if a.device.type == "cpu":
        return (a.to(torch.int64) @ b.to(torch.int64)).to(torch.int32)
    # CUDA has no int64 matmul; float64 holds every partial sum exactly (|sum| <= K * 2^14 < 2^53).
    return (a.to(torch.float64) @ b.to(torch.float64)).to(torch.int64).to(torch.int32)


def quantize_rows(x: Tensor) -> Tuple[Tensor, Tensor]:
    """(q int8, scale fp32) of symmetric per-row quantization of a 2-D float tensor."""
    x = x.float()
    scale = x.abs().amax(dim=1) / 127 if x.shape[1] else x.new_zeros(x.shape[0])
    div = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.round(x / div[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantize(acc: Tensor, row_scale: Tensor, wscale: Tensor, bias: Optional[Tensor]) -> Tensor:
    out = acc.float() * row_scale[:, None] * wscale[None, :]
    return out + bias if bias is not None else out


@register_kernel("int8_mm", "python", devices=DEVICES)
def int8_mm(a: Tensor, b: Tensor) -> Tensor:
    return mm(a, b)


@register_kernel("int8_mm_packed", "python", devices=DEVICES)
def int8_mm_packed(a: Tensor, codes: Tensor, packed: Tensor, comp: Tensor) -> Tensor:
    return mm(a, codes.t())


@register_kernel("int8_linear", "python", devices=DEVICES)
def int8_linear(x: Tensor, codes: Tensor, wscale: Tensor, packed: Tensor, comp: Tensor,
                bias: Optional[Tensor]) -> Tensor:
    q, scale = quantize_rows(x)
    return dequantize(mm(q, codes.t()), scale, wscale, bias)
