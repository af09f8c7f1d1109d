"""Numba twin of the native quantization kernels (csrc/cpu/quant_kernels.h, quant.cpp): the same fp32 arithmetic
(true division, clamp, then round half-to-even by adding and subtracting 1.5 * 2^23), so the codes are
bit-identical; parallel over rows with ``prange``, or over byte-aligned pieces when there are few long rows."""
from __future__ import annotations

from typing import Tuple

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from ..._dispatch import register_kernel
from ...formats.codes import empty_codes
from .._quant import RANGE_OVERFLOW, dequantize_supports, into_supports, quantize_supports

_ROUND = np.float32(12582912.0)  # 1.5 * 2^23
_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_PIECE_ALIGN = 64
_MIN_PIECE = 1 << 14


@njit(cache=True)
def _split(rows, length, nthreads):
    """(pieces per row, elements per piece), as split_rows in quant.cpp."""
    if rows >= 8 * nthreads or length <= _MIN_PIECE:
        return 1, max(length, 1)
    want = max(1, (4 * nthreads + rows - 1) // rows)
    n = max(_MIN_PIECE, (length + want - 1) // want)
    n = (n + _PIECE_ALIGN - 1) // _PIECE_ALIGN * _PIECE_ALIGN
    return (length + n - 1) // n, n


@njit(cache=True)
def _reduce(bits, sym):
    """(a, b, bad) as fp32 bit patterns, from the bit patterns of a piece, as reduce() in quant_kernels.h: integer
    max/min over bit patterns (which vectorizes), NaN/inf seen as patterns beyond the finite range."""
    if sym:
        m = np.int32(0)
        for v in bits:
            m = max(m, v & np.int32(0x7FFFFFFF))
        return m, np.int32(0), m >= np.int32(0x7F800000)
    if bits.size == 0:
        return np.int32(0), np.int32(0), False
    lo = np.int32(0x7FFFFFFF)
    hi = np.int32(-0x80000000)
    for v in bits:
        k = v ^ ((v >> np.int32(31)) & np.int32(0x7FFFFFFF))  # signed key with the order of the floats
        lo = min(lo, k)
        hi = max(hi, k)
    bad = hi >= np.int32(0x7F800000) or lo <= np.int32(-0x7F800001)
    return lo ^ ((lo >> np.int32(31)) & np.int32(0x7FFFFFFF)), hi ^ ((hi >> np.int32(31)) & np.int32(0x7FFFFFFF)), bad


@njit(cache=True)
def _scale_zp(a, b, bits, sym):
    if sym:
        s = a / np.float32((1 << (bits - 1)) - 1)
        return (_ONE if s == _ZERO else s), 0
    qmax = (1 << bits) - 1
    lo = min(a, _ZERO)
    hi = max(b, _ZERO)
    s = (hi - lo) / np.float32(qmax)
    if s == _ZERO:
        s = _ONE
    z = np.float32(np.rint(-lo / s))
    return s, int(min(max(z, _ZERO), np.float32(qmax)))


@njit(cache=True, inline="always")
def _field(v, scale, lo, hi, off):
    q = v / scale
    q = lo if q < lo else q
    q = hi if q > hi else q
    q = (q + _ROUND) - _ROUND
    return np.uint8((np.int32(q) + off) & 0xFF)


@njit(cache=True)
def _quantize_piece(x, scale, zp, bits, sym, out):
    qmax = (1 << (bits - 1)) - 1 if sym else (1 << bits) - 1
    lo = np.float32(-qmax if sym else -zp)
    hi = np.float32(qmax if sym else qmax - zp)
    off = np.int32((0 if bits == 8 else 1 << (bits - 1)) if sym else zp)
    n = x.size
    if bits == 8:
        for i in range(n):
            out[i] = _field(x[i], scale, lo, hi, off)
        return
    per = 8 // bits
    full = n // per
    if bits == 4:
        for j in range(full):
            out[j] = _field(x[2 * j], scale, lo, hi, off) | (_field(x[2 * j + 1], scale, lo, hi, off) << 4)
    else:
        for j in range(full):
            out[j] = (_field(x[4 * j], scale, lo, hi, off) | (_field(x[4 * j + 1], scale, lo, hi, off) << 2)
                      | (_field(x[4 * j + 2], scale, lo, hi, off) << 4)
                      | (_field(x[4 * j + 3], scale, lo, hi, off) << 6))
    if n % per:  # a row's last, partial byte: zero fields pad it
        byte = np.uint8(0)
        for k in range(n % per):
            byte |= _field(x[full * per + k], scale, lo, hi, off) << (k * bits)
        out[full] = byte


@njit(cache=True)
def _dequantize_piece(codes, scale, zp, bits, sym, out):
    sub = np.int32((0 if bits == 8 else 1 << (bits - 1)) if sym else zp)
    n = out.size
    if bits == 8:  # codes is int8 (symmetric) or uint8
        for i in range(n):
            out[i] = np.float32(np.int32(codes[i]) - sub) * scale
        return
    per = 8 // bits
    mask = np.int32((1 << bits) - 1)
    full = n // per
    for j in range(full):
        c = np.int32(codes[j])
        for k in range(per):
            out[j * per + k] = np.float32(((c >> (k * bits)) & mask) - sub) * scale
    for k in range(n % per):
        out[full * per + k] = np.float32(((np.int32(codes[full]) >> (k * bits)) & mask) - sub) * scale


@njit(cache=True, parallel=True)
def _quantize_rows(x, xbits, bits, sym, codes, scale, zp, nthreads):
    """Returns (rows with NaN/inf, rows whose asymmetric range overflows)."""
    rows, length = x.shape
    per_row, plen = _split(rows, length, nthreads)
    tasks = rows * per_row
    pa_bits = np.zeros(tasks, np.int32)
    pb_bits = np.zeros(tasks, np.int32)
    pbad = np.zeros(tasks, np.bool_)
    for t in prange(tasks):
        r, begin = t // per_row, t % per_row * plen
        pa_bits[t], pb_bits[t], pbad[t] = _reduce(xbits[r, begin:min(begin + plen, length)], sym)
    pa = pa_bits.view(np.float32)
    pb = pb_bits.view(np.float32)
    bad = 0
    overflow = 0
    for r in range(rows):
        a, b = pa[r * per_row], pb[r * per_row]
        for t in range(r * per_row, (r + 1) * per_row):
            bad += pbad[t]
            a = max(a, pa[t]) if sym else min(a, pa[t])
            b = max(b, pb[t])
        scale[r], zp[r] = _scale_zp(a, b, bits, sym)
        overflow += np.isinf(scale[r])
    if bad or overflow:
        return bad, overflow
    for t in prange(tasks):
        r, begin = t // per_row, t % per_row * plen
        end = min(begin + plen, length)
        _quantize_piece(x[r, begin:end], scale[r], zp[r], bits, sym,
                        codes[r, begin * bits // 8:(end * bits + 7) // 8])
    return 0, 0


@njit(cache=True, parallel=True)
def _dequantize_rows(codes, scale, zp, bits, sym, out, nthreads):
    rows, length = out.shape
    per_row, plen = _split(rows, length, nthreads)
    for t in prange(rows * per_row):
        r, begin = t // per_row, t % per_row * plen
        end = min(begin + plen, length)
        _dequantize_piece(codes[r, begin * bits // 8:(end * bits + 7) // 8], scale[r], zp[r], bits, sym,
                          out[r, begin:end])


def _threads() -> int:
    return min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)


@register_kernel("quantize", "numba", dtypes=(torch.float32,), supports=quantize_supports)
def quantize(x: Tensor, bits: int, scheme: str, method: str, percentile: float) -> Tuple[Tensor, Tensor, Tensor]:
    codes, scale, zp = empty_codes(*x.shape, bits, scheme)
    xa = x.detach().numpy()
    bad, overflow = _quantize_rows(xa, xa.view(np.int32), bits, scheme == "symmetric", codes.numpy().view(np.uint8),
                                   scale.numpy(), zp.numpy(), _threads())
    if bad:
        n = int(np.count_nonzero(~np.isfinite(xa)))
        raise ValueError(f"x contains {n} NaN or infinite value(s); quantization needs finite values")
    if overflow:
        raise ValueError(RANGE_OVERFLOW)
    return codes, scale, zp


@register_kernel("dequantize_into", "numba", supports=into_supports)
def dequantize_into(codes: Tensor, scale: Tensor, zp: Tensor, bits: int, scheme: str, out: Tensor) -> None:
    _dequantize_rows(codes.numpy(), scale.numpy(), zp.numpy(), bits, scheme == "symmetric", out.detach().numpy(),
                     _threads())


@register_kernel("dequantize", "numba", supports=dequantize_supports)
def dequantize(codes: Tensor, scale: Tensor, zp: Tensor, bits: int, scheme: str, length: int) -> Tensor:
    out = torch.empty((codes.shape[0], length), dtype=torch.float32)
    dequantize_into(codes, scale, zp, bits, scheme, out)
    return out
