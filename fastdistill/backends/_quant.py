"""What the compiled quantization kernels (native, Numba) serve, and the error text every backend shares: one floor
below the backends, which never import each other."""
from __future__ import annotations

from typing import Optional

from torch import Tensor

COMPILED_BITS = (8, 4, 2)
LINEAR = ("symmetric", "asymmetric")
RANGE_OVERFLOW = "x: the asymmetric range max - min overflows float32; rescale x first"


def linear_absmax_reason(bits: int, scheme: str, method: str = "absmax") -> Optional[str]:
    """Why the native and Numba kernels cannot serve these settings, or None: they implement linear 8/4/2-bit
    quantization with absmax (min/max) scales; the other methods, log2 and 1 bit run on the reference."""
    if bits not in COMPILED_BITS:
        return f"bits={bits} (compiled kernels handle {COMPILED_BITS})"
    if scheme not in LINEAR:
        return f"scheme={scheme!r} (compiled kernels handle {LINEAR})"
    if method != "absmax":
        return f"scale_method={method!r} (compiled kernels compute absmax scales)"
    return None


def quantize_supports(x: Tensor, bits: int, scheme: str, method: str, percentile: float) -> Optional[str]:
    return linear_absmax_reason(bits, scheme, method)


def dequantize_supports(codes: Tensor, scale: Tensor, zp: Tensor, bits: int, scheme: str,
                        length: int) -> Optional[str]:
    return linear_absmax_reason(bits, scheme)


def into_supports(codes: Tensor, scale: Tensor, zp: Tensor, bits: int, scheme: str, out: Tensor) -> Optional[str]:
    return linear_absmax_reason(bits, scheme)
