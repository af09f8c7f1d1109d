"""Numba twins of the native data-compression kernels (csrc/cpu/data_kernels.h): the same fp32 arithmetic
(quotient, clamp, round half-to-even by adding and subtracting 1.5 * 2^23; delta running values updated as
``v + code * scale`` with two roundings), so integer codes are bit-identical; parallel with ``prange``.

The assignment is a plain row-by-row GEMM form (each row's dot products accumulated over the features into a
centroid-length vector, which LLVM vectorizes), not the register-tiled microkernel of the C++ tier.
"""
from __future__ import annotations

from typing import Tuple

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from ..._dispatch import register_kernel
from .._data import (centroid_norms, check_code_range, check_delta, check_edges, check_histogram_args, check_labels,
                     histogram_error, nonfinite_error, rows_error)

F32 = (torch.float32,)
_ROUND = np.float32(12582912.0)  # 1.5 * 2^23
_FMAX = np.float32(3.4028234663852886e38)
_ROWS = 64  # rows per task


@njit(cache=True, inline="always")
def _finite(v):
    return abs(v) <= _FMAX


@njit(cache=True, inline="always")
def _round_clamped(v, lo, hi):
    v = lo if v < lo else v
    v = hi if v > hi else v
    return (v + _ROUND) - _ROUND


@njit(cache=True, parallel=True)
def _assign(x, ct, cn, labels, dist2):
    n, d = x.shape
    k = ct.shape[1]
    bad = 0
    for t in prange((n + _ROWS - 1) // _ROWS):
        acc = np.empty(k, np.float32)
        for i in range(t * _ROWS, min(n, (t + 1) * _ROWS)):
            acc[:] = np.float32(0.0)
            xx = np.float32(0.0)
            for q in range(d):
                xv = x[i, q]
                xx += xv * xv
                for j in range(k):
                    acc[j] += xv * ct[q, j]
            best = cn[0] - np.float32(2.0) * acc[0]
            at = 0
            for j in range(1, k):
                v = cn[j] - np.float32(2.0) * acc[j]
                if v < best:
                    best = v
                    at = j
            labels[i] = at
            d2 = xx + best
            dist2[i] = d2 if d2 > np.float32(0.0) else np.float32(0.0)
            bad += not _finite(xx)
    return bad


@register_kernel("kmeans_assign", "numba", dtypes=F32)
def kmeans_assign(x: Tensor, centroids: Tensor) -> Tuple[Tensor, Tensor]:
    cn = centroid_norms(centroids).numpy()
    n = x.shape[0]
    labels = torch.empty(n, dtype=torch.int64)
    dist2 = torch.empty(n, dtype=torch.float32)
    bad = _assign(x.numpy(), centroids.T.contiguous().numpy(), cn, labels.numpy(), dist2.numpy())
    if bad:
        raise rows_error(bad)
    return labels, dist2


@njit(cache=True, parallel=True)
def _centroid_sums(x, labels, k, sums, counts, parts):
    n, d = x.shape
    for p in prange(parts):  # each part adds its rows into its own accumulators, summed after
        for i in range(n * p // parts, n * (p + 1) // parts):
            lab = labels[i]
            for q in range(d):
                sums[p, lab, q] += x[i, q]
            counts[p, lab] += 1


@register_kernel("centroid_sums", "numba", dtypes=(torch.float32, torch.int64))
def centroid_sums(x: Tensor, labels: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    check_labels(labels, k)
    parts = max(1, min(numba.get_num_threads(), x.shape[0] // 4096))
    sums = np.zeros((parts, k, x.shape[1]))
    counts = np.zeros((parts, k), np.int64)
    _centroid_sums(x.numpy(), labels.numpy(), k, sums, counts, parts)
    return torch.from_numpy(sums.sum(0)), torch.from_numpy(counts.sum(0))


@njit(cache=True, parallel=True)
def _column_stats(x, out):
    n, d = x.shape
    bad = 0
    for j in prange(d):
        mn, mx, sa, am, nz, st = np.inf, -np.inf, 0.0, np.float32(0.0), np.inf, np.float32(0.0)
        for i in range(n):
            v = x[i, j]
            a = abs(v)
            bad += not _finite(v)
            mn = min(mn, v)
            mx = max(mx, v)
            am = max(am, a)
            if a > 0:
                nz = min(nz, a)
            sa += a
            if i:
                st = max(st, abs(v - x[i - 1, j]))
        out[0, j], out[1, j], out[2, j], out[3, j], out[4, j], out[5, j] = mn, mx, sa, am, nz, st
    return bad


@register_kernel("column_stats", "numba", dtypes=F32)
def column_stats(x: Tensor) -> Tensor:
    out = torch.empty((6, x.shape[1]), dtype=torch.float64)
    bad = _column_stats(x.numpy(), out.numpy())
    if bad:
        raise nonfinite_error(bad)
    return out


@njit(cache=True, parallel=True)
def _bin_codes(x, edges, codes):
    n, d = x.shape
    m = edges.shape[1]
    bad = 0
    for j in prange(d):
        for i in range(n):
            v = x[i, j]
            bad += not _finite(v)
            lo, hi = 0, m  # number of edges <= v: first index whose edge is > v
            while lo < hi:
                mid = (lo + hi) >> 1
                if edges[j, mid] <= v:
                    lo = mid + 1
                else:
                    hi = mid
            codes[j, i] = lo
    return bad


@register_kernel("bin_codes", "numba", dtypes=F32)
def bin_codes(x: Tensor, edges: Tensor) -> Tensor:
    check_edges(edges)
    codes = torch.empty((x.shape[1], x.shape[0]), dtype=torch.uint8)
    bad = _bin_codes(x.numpy(), edges.numpy(), codes.numpy())
    if bad:
        raise nonfinite_error(bad)
    return codes


@njit(cache=True, parallel=True)
def _histograms(codes, target, n_target, n_bins, out):
    d, n = codes.shape
    bad = 0
    for j in prange(d):
        for i in range(n):
            t = target[i]
            c = codes[j, i]
            if t < 0 or t >= n_target or c >= n_bins:
                bad += 1
            else:
                out[j, t, c] += 1
    return bad


@register_kernel("joint_histograms", "numba", dtypes=(torch.uint8, torch.int32))
def joint_histograms(codes: Tensor, target: Tensor, n_target: int, n_bins: int) -> Tensor:
    check_histogram_args(n_target, n_bins)
    out = torch.zeros((codes.shape[0], n_target, n_bins), dtype=torch.int64)
    bad = _histograms(codes.numpy(), target.numpy(), n_target, n_bins, out.numpy())
    if bad:
        raise histogram_error(bad)
    return out


@njit(cache=True, parallel=True)
def _quantize(x, scale, offset, qmin, qmax, codes):
    n, d = x.shape
    lo, hi = np.float32(qmin), np.float32(qmax)
    bad = 0
    for t in prange((n + _ROWS - 1) // _ROWS):
        for i in range(t * _ROWS, min(n, (t + 1) * _ROWS)):
            for j in range(d):
                v = x[i, j]
                bad += not _finite(v)
                q = _round_clamped((v - offset[j]) / scale[j], lo, hi)
                codes[i, j] = np.uint8(np.int32(q) & 0xFF)
    return bad


@register_kernel("quantize_columns", "numba", dtypes=F32)
def quantize_columns(x: Tensor, scale: Tensor, offset: Tensor, qmin: int, qmax: int) -> Tensor:
    check_code_range(scale, offset, qmin, qmax)
    codes = torch.empty(x.shape, dtype=torch.int8 if qmin < 0 else torch.uint8)
    bad = _quantize(x.numpy(), scale.numpy(), offset.numpy(), qmin, qmax, codes.numpy().view(np.uint8))
    if bad:
        raise nonfinite_error(bad)
    return codes


@njit(cache=True, parallel=True)
def _dequantize(codes, scale, offset, out):
    n, d = codes.shape
    for t in prange((n + _ROWS - 1) // _ROWS):
        for i in range(t * _ROWS, min(n, (t + 1) * _ROWS)):
            for j in range(d):
                out[i, j] = np.float32(codes[i, j]) * scale[j] + offset[j]


@register_kernel("dequantize_columns", "numba", dtypes=(torch.int8, torch.uint8, torch.float32))
def dequantize_columns(codes: Tensor, scale: Tensor, offset: Tensor) -> Tensor:
    out = torch.empty(codes.shape, dtype=torch.float32)
    _dequantize(codes.numpy(), scale.numpy(), offset.numpy(), out.numpy())
    return out


@njit(cache=True, parallel=True)
def _delta_encode(x, anchor, step, block, qmax, codes):
    n, d = x.shape
    q = np.float32(qmax)
    bad = 0
    for b in prange((n + block - 1) // block):
        running = np.empty(d, np.float32)
        r0 = b * block
        for j in range(d):
            v = x[r0, j]
            bad += not _finite(v)
            c = _round_clamped(v / anchor[j], -q, q)
            codes[r0, j] = np.int8(c)
            running[j] = c * anchor[j]
        for i in range(r0 + 1, min(n, r0 + block)):
            for j in range(d):
                v = x[i, j]
                bad += not _finite(v)
                c = _round_clamped((v - running[j]) / step[j], -q, q)
                codes[i, j] = np.int8(c)
                running[j] = running[j] + c * step[j]
    return bad


@register_kernel("delta_encode", "numba", dtypes=F32)
def delta_encode(x: Tensor, anchor_scale: Tensor, step_scale: Tensor, block: int, qmax: int) -> Tensor:
    check_delta(anchor_scale, step_scale, block, qmax)
    codes = torch.empty(x.shape, dtype=torch.int8)
    bad = _delta_encode(x.numpy(), anchor_scale.numpy(), step_scale.numpy(), block, qmax, codes.numpy())
    if bad:
        raise nonfinite_error(bad)
    return codes


@njit(cache=True, parallel=True)
def _delta_decode(codes, anchor, step, block, out):
    n, d = codes.shape
    for b in prange((n + block - 1) // block):
        r0 = b * block
        for j in range(d):
            out[r0, j] = np.float32(codes[r0, j]) * anchor[j]
        for i in range(r0 + 1, min(n, r0 + block)):
            for j in range(d):
                out[i, j] = out[i - 1, j] + np.float32(codes[i, j]) * step[j]


@register_kernel("delta_decode", "numba", dtypes=(torch.int8, torch.float32))
def delta_decode(codes: Tensor, anchor_scale: Tensor, step_scale: Tensor, block: int) -> Tensor:
    check_delta(anchor_scale, step_scale, block)
    out = torch.empty(codes.shape, dtype=torch.float32)
    _delta_decode(codes.numpy(), anchor_scale.numpy(), step_scale.numpy(), block, out.numpy())
    return out
