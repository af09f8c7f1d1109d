"""Quantization kernels backed by ``fastdistill._C`` (see csrc/cpu/quant*.cpp)."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from ... import _C
from ..._dispatch import register_kernel
from ...formats.codes import empty_codes
from .._quant import dequantize_supports, into_supports, quantize_supports


@register_kernel("quantize", "native", dtypes=(torch.float32,), supports=quantize_supports)
def quantize(x: Tensor, bits: int, scheme: str, method: str, percentile: float) -> Tuple[Tensor, Tensor, Tensor]:
    codes, scale, zp = empty_codes(*x.shape, bits, scheme)
    _C.quantize_rows(x.detach().numpy(), bits, scheme == "symmetric", codes.numpy(), scale.numpy(), zp.numpy(),
                     torch.get_num_threads())
    return codes, scale, zp


@register_kernel("dequantize_into", "native", supports=into_supports)
def dequantize_into(codes: Tensor, scale: Tensor, zp: Tensor, bits: int, scheme: str, out: Tensor) -> None:
    _C.dequantize_rows(codes.numpy(), scale.numpy(), zp.numpy(), bits, scheme == "symmetric", out.detach().numpy(),
                       torch.get_num_threads())


@register_kernel("dequantize", "native", supports=dequantize_supports)
def dequantize(codes: Tensor, scale: Tensor, zp: Tensor, bits: int, scheme: str, length: int) -> Tensor:
    out = torch.empty((codes.shape[0], length), dtype=torch.float32)
    dequantize_into(codes, scale, zp, bits, scheme, out)
    return out
