"""Quantization kernels backed by ``fastdistill._C`` (see csrc/cpu/quant*.cpp)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ... import _C
from ..._dispatch import register_kernel
from ..reference.quant import code_dtype, row_bytes

NATIVE_BITS = (8, 4, 2)
LINEAR = ("symmetric", "asymmetric")


def linear_absmax_reason(bits: int, scheme: str, method: str = "absmax") -> Optional[str]:
    """Why the native (and Numba) kernels cannot serve these settings, or None: they implement linear 8/4/2-bit
    quantization with absmax (min/max) scales; the other methods, log2 and 1 bit run on the reference."""
    if bits not in NATIVE_BITS:
        return f"bits={bits} (compiled kernels handle {NATIVE_BITS})"
    if scheme not in LINEAR:
        return f"scheme={scheme!r} (compiled kernels handle {LINEAR})"
    if method != "absmax":
        return f"scale_method={method!r} (compiled kernels compute absmax scales)"
    return None


def _quantize_supports(x: Tensor, bits: int, scheme: str, method: str, percentile: float) -> Optional[str]:
    return linear_absmax_reason(bits, scheme, method)


def _dequantize_supports(codes: Tensor, scale: Tensor, zp: Tensor, bits: int, scheme: str,
                         length: int) -> Optional[str]:
    return linear_absmax_reason(bits, scheme)


def empty_outputs(x: Tensor, bits: int, scheme: str) -> Tuple[Tensor, Tensor, Tensor]:
    rows, length = x.shape
    return (torch.empty((rows, row_bytes(length, bits)), dtype=code_dtype(bits, scheme)),
            torch.empty(rows, dtype=torch.float32), torch.empty(rows, dtype=torch.int32))


@register_kernel("quantize", "native", dtypes=(torch.float32,), supports=_quantize_supports)
def quantize(x: Tensor, bits: int, scheme: str, method: str, percentile: float) -> Tuple[Tensor, Tensor, Tensor]:
    codes, scale, zp = empty_outputs(x, bits, scheme)
    _C.quantize_rows(x.detach().numpy(), bits, scheme == "symmetric", codes.numpy(), scale.numpy(), zp.numpy(),
                     torch.get_num_threads())
    return codes, scale, zp


def _into_supports(codes: Tensor, scale: Tensor, zp: Tensor, bits: int, scheme: str, out: Tensor) -> Optional[str]:
    return linear_absmax_reason(bits, scheme)


@register_kernel("dequantize_into", "native", supports=_into_supports)
def dequantize_into(codes: Tensor, scale: Tensor, zp: Tensor, bits: int, scheme: str, out: Tensor) -> None:
    _C.dequantize_rows(codes.numpy(), scale.numpy(), zp.numpy(), bits, scheme == "symmetric", out.detach().numpy(),
                       torch.get_num_threads())


@register_kernel("dequantize", "native", supports=_dequantize_supports)
def dequantize(codes: Tensor, scale: Tensor, zp: Tensor, bits: int, scheme: str, length: int) -> Tensor:
    out = torch.empty((codes.shape[0], length), dtype=torch.float32)
    dequantize_into(codes, scale, zp, bits, scheme, out)
    return out
