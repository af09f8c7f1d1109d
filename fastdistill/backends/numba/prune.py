"""Numba twin of the native pruning kernels: the same radix selection on fp32 magnitude bit patterns (see
csrc/cpu/prune_kernels.h), parallel over chunks with ``prange``."""
from __future__ import annotations

from typing import List, Optional, Tuple

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from ..._dispatch import register_kernel
from .._magnitude import FLOAT_DTYPES as DTYPES
from .._magnitude import register_magnitude_kernels

_DT = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_MIN_CHUNK = 1 << 15
_HI_BINS = 1 << 15
_LO_BINS = 1 << 16
_INF_KEY = 0x7F800000


@njit(cache=True, inline="always")
def _key(bits, dt):
    """fp32 bit pattern of |x| for x given as raw bits (dt 0: fp32, 1: fp16, 2: bf16)."""
    b = np.uint32(bits)
    if dt == 0:
        return b & np.uint32(0x7FFFFFFF)
    h = b & np.uint32(0x7FFF)
    if dt == 2:
        return h << np.uint32(16)
    if h >= 0x7C00:
        return (h << np.uint32(13)) | np.uint32(0x7F800000)
    if h >= 0x400:
        return (h << np.uint32(13)) + np.uint32(0x38000000)
    if h == 0:
        return np.uint32(0)
    p = 0  # fp16 subnormal h * 2^-24: normalise by the position of its leading bit
    while (h >> np.uint32(p + 1)) != 0:
        p += 1
    return (np.uint32(p + 103) << np.uint32(23)) | ((h << np.uint32(23 - p)) & np.uint32(0x7FFFFF))


@njit(cache=True)
def _chunks(n, nthreads):
    return max(1, min(nthreads, (n + _MIN_CHUNK - 1) // _MIN_CHUNK))


@njit(cache=True, parallel=True)
def _hist_hi(bits, dt, hist, nthreads):
    n = bits.size
    nch = _chunks(n, nthreads)
    local = np.zeros((nch, _HI_BINS), np.int64)
    for c in prange(nch):
        for i in range(n * c // nch, n * (c + 1) // nch):
            local[c, _key(bits[i], dt) >> 16] += 1
    for c in range(nch):
        hist += local[c]


@njit(cache=True, parallel=True)
def _hist_lo(bits, dt, hi, hist, nthreads):
    n = bits.size
    nch = _chunks(n, nthreads)
    local = np.zeros((nch, _LO_BINS), np.int64)
    for c in prange(nch):
        for i in range(n * c // nch, n * (c + 1) // nch):
            k = _key(bits[i], dt)
            if (k >> 16) == hi:
                local[c, k & 0xFFFF] += 1
    for c in range(nch):
        hist += local[c]


@njit(cache=True, parallel=True)
def _count_nan(bits, dt):
    count = 0
    for i in prange(bits.size):
        if _key(bits[i], dt) > _INF_KEY:
            count += 1
    return count


@njit(cache=True, parallel=True)
def _write_mask(bits, dt, lo, mask, zero_out):
    """mask = key >= lo, and zero where key < lo when zero_out; returns the number of keys == lo."""
    ties = 0
    for i in prange(bits.size):
        k = _key(bits[i], dt)
        mask[i] = k >= lo
        if k == lo:
            ties += 1
        if zero_out and k < lo:
            bits[i] = 0
    return ties


@njit(cache=True)
def _prune_ties(bits, dt, key, count, mask, zero_out):
    """Prunes the first `count` elements whose key equals `key`; returns how many are left to prune."""
    for i in range(bits.size):
        if count == 0:
            break
        if _key(bits[i], dt) == key:
            mask[i] = False
            if zero_out:
                bits[i] = 0
            count -= 1
    return count


@njit(cache=True)
def _find_bin(hist, k):
    cum = 0
    for b in range(hist.size):
        if cum + hist[b] >= k:
            return b, cum
        cum += hist[b]
    return -1, cum


def _bits(x: Tensor) -> Tuple[np.ndarray, int]:
    """Flat numpy view of x's raw bits (uint32 for fp32, uint16 for fp16/bf16) and its dtype code."""
    view = torch.int32 if x.dtype == torch.float32 else torch.int16
    bits = x.detach().reshape(-1).view(view).numpy()
    return bits.view(np.uint32 if view == torch.int32 else np.uint16), _DT[x.dtype]


def _select(src: List[Tuple[np.ndarray, int]], k: int, nthreads: int) -> Tuple[int, int, int]:
    """(key, less, equal) of the k-th smallest magnitude (1 <= k <= total)."""
    hist = np.zeros(_HI_BINS, np.int64)
    for bits, dt in src:
        _hist_hi(bits, dt, hist, nthreads)
    if hist[0x7F80:].sum():
        _raise_on_nan(src)
    hi, below_hi = _find_bin(hist, k)
    hist_lo = np.zeros(_LO_BINS, np.int64)
    for bits, dt in src:
        _hist_lo(bits, dt, np.uint32(hi), hist_lo, nthreads)
    lo, below_lo = _find_bin(hist_lo, k - below_hi)
    return (hi << 16) | lo, below_hi + below_lo, int(hist_lo[lo])


def _raise_on_nan(src: List[Tuple[np.ndarray, int]]) -> None:
    nans = sum(_count_nan(bits, dt) for bits, dt in src)
    if nans:
        raise ValueError(f"x contains {nans} NaN value(s); magnitude pruning needs finite or infinite values")


def _run(xs: List[Tensor], k: int, masks: Optional[List[Tensor]], inplace: bool) -> int:
    src = [_bits(x) for x in xs]
    total = sum(x.numel() for x in xs)
    nthreads = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    key = less = equal = 0
    if k in (0, total):
        _raise_on_nan(src)
        if k and total:
            key, less, equal = _select(src, k, nthreads)
        lo, tie_prune = (0 if k == 0 else 0xFFFFFFFF), 0
    else:
        key, less, equal = _select(src, k, nthreads)
        tie_prune = k - less
        lo, tie_prune = (key + 1, 0) if tie_prune == equal else (key, tie_prune)
    if masks is not None or inplace:
        outs = masks if masks is not None else [torch.empty(x.shape, dtype=torch.bool) for x in xs]
        mask_arrays = [m.numpy().reshape(-1) for m in outs]
        for (bits, dt), m in zip(src, mask_arrays):
            _write_mask(bits, dt, np.uint32(lo), m, inplace)
        for (bits, dt), m in zip(src, mask_arrays):
            if tie_prune == 0:
                break
            tie_prune = _prune_ties(bits, dt, np.uint32(lo), tie_prune, m, inplace)
    return key


register_magnitude_kernels("numba", _run)


@njit(cache=True, parallel=True)
def _nm_mask(bits, dt, m, n, mask):
    groups = bits.size // m
    for g in prange(groups):
        base = g * m
        for j in range(m):
            kj = _key(bits[base + j], dt)
            rank = 0
            for i in range(m):
                ki = _key(bits[base + i], dt)
                if ki > kj or (ki == kj and i < j):
                    rank += 1
            mask[base + j] = rank < n


@register_kernel("nm_mask", "numba", dtypes=DTYPES)
def nm_mask(x: Tensor, n: int, m: int) -> Tensor:
    bits, dt = _bits(x)
    bits = bits
    if x.numel():
        _raise_on_nan([(bits, dt)])
    mask = torch.empty(x.shape, dtype=torch.bool)
    _nm_mask(bits, dt, m, n, mask.numpy().reshape(-1))
    return mask
