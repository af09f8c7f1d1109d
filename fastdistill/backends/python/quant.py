"""Reference quantization kernels in plain torch, written for clarity; the ground truth of every other backend.

The kernels see a float tensor viewed as ``(rows, length)``: one scale (and zero point) per row. The public API
(:mod:`fastdistill.quantization`) maps per-tensor, per-channel and group-wise quantization onto rows; the exact
rules are documented there. Everything is computed in float32.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..._dispatch import register_kernel
from ...formats.codes import pack, qrange, unpack
from .._quant import RANGE_OVERFLOW

DEVICES = ("cpu", "cuda")
MSE_RATIOS = tuple(1.0 - 0.05 * i for i in range(20))  # clip candidates of the "mse" method, largest first


def check_finite(x: Tensor) -> None:
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"x contains {bad} NaN or infinite value(s); quantization needs finite values")


def _clip_range(x: Tensor, bits: int, scheme: str, method: str, percentile: float) -> Tuple[Tensor, Tensor]:
    """(lo, hi) per row: the range the codes must cover (for symmetric/log2 schemes lo = -hi)."""
    n = x.shape[1]
    mag = x.abs()
    if scheme == "asymmetric":
        lo, hi = x.amin(1), x.amax(1)
    else:
        hi = mag.amax(1)
        lo = -hi
    if method == "mean":
        c = mag.mean(1) * float(1 << (bits - 1))
        lo, hi = torch.maximum(lo, -c), torch.minimum(hi, c)
    elif method == "percentile":
        k = min(max(int(-(-percentile * n // 100)), 1), n)  # nearest rank: ceil(p / 100 * n)
        if scheme == "asymmetric":
            hi = x.kthvalue(k, 1).values
            lo = x.kthvalue(n + 1 - k, 1).values
        else:
            hi = mag.kthvalue(k, 1).values
            lo = -hi
    return lo, hi


def scale_zero_point(lo: Tensor, hi: Tensor, bits: int, scheme: str) -> Tuple[Tensor, Tensor]:
    """Per-row fp32 scale and int32 zero point for the clip range [lo, hi]. A zero scale (all-zero row, or a range
    so small that the division underflows) becomes 1."""
    qlo, qhi = qrange(bits, scheme)
    if scheme == "asymmetric":
        lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)  # zero must be exactly representable
        scale = (hi - lo) / qhi
    elif scheme == "log2":
        scale = hi.clone()
    else:
        scale = hi / qhi
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    if scheme == "asymmetric":
        zp = torch.clamp(torch.round(-lo / scale), 0, qhi).to(torch.int32)
    else:
        zp = torch.zeros_like(scale, dtype=torch.int32)
    return scale, zp


def quantize_codes(x: Tensor, scale: Tensor, zp: Tensor, bits: int, scheme: str) -> Tensor:
    """Integer codes (int32, not packed) of ``x`` (rows, length) for the per-row scale / zero point."""
    qlo, qhi = qrange(bits, scheme)
    s = scale[:, None]
    if bits == 1:
        return torch.where(x >= 0, 1, -1).to(torch.int32)
    if scheme == "log2":
        # |x| ~ scale * 2^(m - qhi), m = round(log2(|x| / scale)) + qhi in [1, qhi]; m <= 0 (or x == 0) -> code 0.
        m = torch.round(torch.log2(x.abs() / s)) + qhi
        m = torch.where(m >= 1, torch.clamp(m, max=qhi), torch.zeros_like(m))
        return (torch.sign(x) * m).to(torch.int32)
    return torch.clamp(torch.round(x / s) + zp[:, None], qlo, qhi).to(torch.int32)


def dequantize_codes(codes: Tensor, scale: Tensor, zp: Tensor, bits: int, scheme: str) -> Tensor:
    """fp32 values of int codes: ``(code - zp) * scale`` for linear schemes, ``sign * scale * 2^(|code| - qmax)``
    (0 for code 0) for log2."""
    s = scale[:, None]
    if scheme == "log2":
        qhi = qrange(bits, scheme)[1]
        mag = torch.exp2((codes.abs() - qhi).float()) * s
        return torch.where(codes == 0, torch.zeros_like(mag), torch.sign(codes).float() * mag)
    return (codes - zp[:, None]).float() * s


def _reconstruction_error(x: Tensor, lo: Tensor, hi: Tensor, bits: int, scheme: str,
                          weight: Optional[Tensor] = None) -> Tensor:
    scale, zp = scale_zero_point(lo, hi, bits, scheme)
    deq = dequantize_codes(quantize_codes(x, scale, zp, bits, scheme), scale, zp, bits, scheme)
    err = (deq - x) ** 2
    return (err * weight if weight is not None else err).sum(1)


def search_clip(x: Tensor, lo: Tensor, hi: Tensor, bits: int, scheme: str,
                weight: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The clip range ``(lo, hi) * r`` per row, r in MSE_RATIOS, with the smallest (weighted) squared
    reconstruction error; ties keep the larger ratio."""
    ratios = torch.tensor(MSE_RATIOS, dtype=torch.float32, device=x.device)
    errs = torch.stack([_reconstruction_error(x, lo * r, hi * r, bits, scheme, weight) for r in ratios], 1)
    best = ratios[errs.argmin(1)]
    return lo * best, hi * best


def choose_scale(x: Tensor, bits: int, scheme: str, method: str, percentile: float) -> Tuple[Tensor, Tensor]:
    """Per-row (scale, zero point) of the fp32 rows ``x`` for the given scale method."""
    if bits == 1:  # sign * mean|x|
        scale = x.abs().mean(1) if x.shape[1] else torch.zeros(x.shape[0], device=x.device)
        return torch.where(scale == 0, torch.ones_like(scale), scale), torch.zeros_like(scale, dtype=torch.int32)
    if x.shape[1] == 0:
        zero = torch.zeros(x.shape[0], device=x.device)
        return scale_zero_point(zero, zero, bits, scheme)
    lo, hi = _clip_range(x, bits, scheme, "absmax" if method == "mse" else method, percentile)
    if method == "mse":
        lo, hi = search_clip(x, lo, hi, bits, scheme)
    return scale_zero_point(lo, hi, bits, scheme)


@register_kernel("quantize", "python", devices=DEVICES)
def quantize(x: Tensor, bits: int, scheme: str, method: str, percentile: float) -> Tuple[Tensor, Tensor, Tensor]:
    xf = x.detach().float()
    check_finite(xf)
    scale, zp = choose_scale(xf, bits, scheme, method, percentile)
    if torch.isinf(scale).any():
        raise ValueError(RANGE_OVERFLOW)
    return pack(quantize_codes(xf, scale, zp, bits, scheme), bits, scheme), scale, zp


@register_kernel("quantize_weighted", "python", devices=DEVICES)
def quantize_weighted(x: Tensor, weight: Tensor, bits: int, scheme: str) -> Tuple[Tensor, Tensor, Tensor]:
    xf = x.detach().float()
    check_finite(xf)
    if x.shape[1] == 0:
        scale, zp = choose_scale(xf, bits, scheme, "absmax", 100.0)
    else:
        lo, hi = _clip_range(xf, bits, scheme, "absmax", 100.0)
        scale, zp = scale_zero_point(*search_clip(xf, lo, hi, bits, scheme, weight.float()), bits, scheme)
    if torch.isinf(scale).any():
        raise ValueError(RANGE_OVERFLOW)
    return pack(quantize_codes(xf, scale, zp, bits, scheme), bits, scheme), scale, zp


@register_kernel("dequantize", "python", devices=DEVICES)
def dequantize(codes: Tensor, scale: Tensor, zp: Tensor, bits: int, scheme: str, length: int) -> Tensor:
    return dequantize_codes(unpack(codes, length, bits, scheme), scale, zp, bits, scheme)


@register_kernel("dequantize_into", "python", devices=DEVICES)
def dequantize_into(codes: Tensor, scale: Tensor, zp: Tensor, bits: int, scheme: str, out: Tensor) -> None:
    out.copy_(dequantize(codes, scale, zp, bits, scheme, out.shape[1]))
