"""Reference data-compression kernels in plain torch, written for clarity: the ground truth of the native and Numba
kernels (and the CUDA path: they run on any device).

* ``kmeans_assign``: nearest centroid by the GEMM form ``||c||^2 - 2 x.c`` (fp32, rows in chunks so the distance
  matrix stays small); the squared distance adds ``||x||^2`` to the winner. Ties go to the smaller index.
* ``centroid_sums``: float64 sums and counts of the rows per label (Lloyd's M step).
* ``column_stats``: per-column min, max, sum |x|, max |x|, smallest nonzero |x|, largest step down the rows.
* ``bin_codes``: ``searchsorted(edges[j], x[:, j], right=True)`` per feature, feature-major uint8.
* ``joint_histograms``: joint counts of (target, code) per feature.
* ``quantize_columns`` / ``dequantize_columns``: ``clamp(round((x - offset) / scale), qmin, qmax)`` (fp32, true
  division, round half to even: the library's quantization arithmetic) and ``code * scale + offset`` (two
  roundings), per column.
* ``delta_encode`` / ``delta_decode``: closed-loop delta (DPCM) codes along rows. Row ``i`` with
  ``i % block == 0`` is an anchor, coded on its own: ``c = clamp(round(x / anchor_scale), -qmax, qmax)``, running
  value ``v = c * anchor_scale``; every other row codes its step from the running value,
  ``c = clamp(round((x - v) / step_scale), -qmax, qmax)``, ``v = v + c * step_scale`` (two fp32 roundings, never
  fused). The decoder replays the same sums, so it reproduces ``v`` bit for bit, and an error never outlives its
  block.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from ..._dispatch import register_kernel
from .._data import (centroid_norms, check_code_range, check_delta, check_edges, check_finite, check_histogram_args,
                     check_labels, histogram_error, rows_error)

DEVICES = ("cpu", "cuda")
_ROWS_PER_CHUNK = 4096


@register_kernel("kmeans_assign", "python", devices=DEVICES)
def kmeans_assign(x: Tensor, centroids: Tensor) -> Tuple[Tensor, Tensor]:
    x, c = x.float(), centroids.float()
    cn = centroid_norms(c)
    n = x.shape[0]
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    dist2 = torch.empty(n, dtype=torch.float32, device=x.device)
    bad = 0
    for i in range(0, n, _ROWS_PER_CHUNK):
        xc = x[i:i + _ROWS_PER_CHUNK]
        best, labels[i:i + len(xc)] = (cn - 2.0 * (xc @ c.T)).min(1)
        xx = (xc * xc).sum(1)
        bad += int((~torch.isfinite(xx)).sum())
        dist2[i:i + len(xc)] = torch.clamp(xx + best, min=0.0)
    if bad:
        raise rows_error(bad)
    return labels, dist2


@register_kernel("centroid_sums", "python", devices=DEVICES)
def centroid_sums(x: Tensor, labels: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    check_labels(labels, k)
    sums = torch.zeros((k, x.shape[1]), dtype=torch.float64, device=x.device).index_add_(0, labels, x.double())
    return sums, torch.bincount(labels, minlength=k)


@register_kernel("column_stats", "python", devices=DEVICES)
def column_stats(x: Tensor) -> Tensor:
    check_finite(x)
    n, d = x.shape
    x = x.float()
    a = x.abs()
    inf = torch.full((d,), float("inf"), device=x.device)
    rows = [x.amin(0) if n else inf, x.amax(0) if n else -inf, a.double().sum(0),
            a.amax(0) if n else torch.zeros(d, device=x.device),
            torch.where(a > 0, a, float("inf")).amin(0) if n else inf,
            (x[1:] - x[:-1]).abs().amax(0) if n > 1 else torch.zeros(d, device=x.device)]
    return torch.stack([r.double() for r in rows])


@register_kernel("bin_codes", "python", devices=DEVICES)
def bin_codes(x: Tensor, edges: Tensor) -> Tensor:
    check_edges(edges)
    check_finite(x)
    if edges.shape[1] == 0:
        return torch.zeros((x.shape[1], x.shape[0]), dtype=torch.uint8, device=x.device)
    return torch.searchsorted(edges.float(), x.float().T.contiguous(), right=True).to(torch.uint8)


@register_kernel("joint_histograms", "python", devices=DEVICES)
def joint_histograms(codes: Tensor, target: Tensor, n_target: int, n_bins: int) -> Tensor:
    check_histogram_args(n_target, n_bins)
    d, n = codes.shape
    c = codes.long()
    t = target.long()
    bad = int((c >= n_bins).sum()) + d * int(((t < 0) | (t >= n_target)).sum())
    if bad:
        raise histogram_error(bad)
    out = torch.zeros((d, n_target * n_bins), dtype=torch.int64, device=codes.device)
    out.scatter_add_(1, t[None, :] * n_bins + c, torch.ones_like(c))
    return out.reshape(d, n_target, n_bins)


@register_kernel("quantize_columns", "python", devices=DEVICES)
def quantize_columns(x: Tensor, scale: Tensor, offset: Tensor, qmin: int, qmax: int) -> Tensor:
    check_code_range(scale, offset, qmin, qmax)
    check_finite(x)
    q = torch.clamp(torch.round((x.float() - offset) / scale), qmin, qmax)
    return q.to(torch.int32).to(torch.int8 if qmin < 0 else torch.uint8)


@register_kernel("dequantize_columns", "python", devices=DEVICES)
def dequantize_columns(codes: Tensor, scale: Tensor, offset: Tensor) -> Tensor:
    return codes.float() * scale + offset


def _blocks(t: Tensor, block: int) -> Tensor:
    """(n, d) -> (blocks, block, d), zero rows padding the last block."""
    n, d = t.shape
    nb = -(-n // block)
    if nb * block != n:
        t = torch.cat([t, t.new_zeros((nb * block - n, d))])
    return t.reshape(nb, block, d)


@register_kernel("delta_encode", "python", devices=DEVICES)
def delta_encode(x: Tensor, anchor_scale: Tensor, step_scale: Tensor, block: int, qmax: int) -> Tensor:
    check_delta(anchor_scale, step_scale, block, qmax)
    check_finite(x)
    n, d = x.shape
    xb = _blocks(x.float(), min(block, max(n, 1)))
    codes = torch.empty(xb.shape, dtype=torch.float32, device=x.device)
    codes[:, 0] = torch.clamp(torch.round(xb[:, 0] / anchor_scale), -qmax, qmax)
    v = codes[:, 0] * anchor_scale
    for t in range(1, xb.shape[1]):
        codes[:, t] = torch.clamp(torch.round((xb[:, t] - v) / step_scale), -qmax, qmax)
        v = v + codes[:, t] * step_scale
    return codes.reshape(-1, d)[:n].to(torch.int8)


@register_kernel("delta_decode", "python", devices=DEVICES)
def delta_decode(codes: Tensor, anchor_scale: Tensor, step_scale: Tensor, block: int) -> Tensor:
    check_delta(anchor_scale, step_scale, block)
    n, d = codes.shape
    cb = _blocks(codes.float(), min(block, max(n, 1)))
    out = torch.empty(cb.shape, dtype=torch.float32, device=codes.device)
    out[:, 0] = cb[:, 0] * anchor_scale
    for t in range(1, cb.shape[1]):
        out[:, t] = out[:, t - 1] + cb[:, t] * step_scale
    return out.reshape(-1, d)[:n]
