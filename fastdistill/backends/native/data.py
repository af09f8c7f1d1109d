"""Data-compression kernels backed by ``fastdistill._C`` (see csrc/cpu/data*.cpp): float32 inputs, outputs
allocated here and filled by the C++ drivers with the GIL released."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from ... import _C
from ..._dispatch import register_kernel

F32 = (torch.float32,)


def _np(t: Tensor):
    return t.detach().numpy()


@register_kernel("kmeans_assign", "native", dtypes=F32)
def kmeans_assign(x: Tensor, centroids: Tensor) -> Tuple[Tensor, Tensor]:
    n = x.shape[0]
    labels = torch.empty(n, dtype=torch.int64)
    dist2 = torch.empty(n, dtype=torch.float32)
    _C.kmeans_assign(_np(x), _np(centroids), labels.numpy(), dist2.numpy(), torch.get_num_threads())
    return labels, dist2


@register_kernel("centroid_sums", "native", dtypes=(torch.float32, torch.int64))
def centroid_sums(x: Tensor, labels: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    sums = torch.empty((k, x.shape[1]), dtype=torch.float64)
    counts = torch.empty(k, dtype=torch.int64)
    _C.centroid_sums(_np(x), labels.numpy(), k, sums.numpy(), counts.numpy(), torch.get_num_threads())
    return sums, counts


@register_kernel("column_stats", "native", dtypes=F32)
def column_stats(x: Tensor) -> Tensor:
    out = torch.empty((6, x.shape[1]), dtype=torch.float64)
    _C.column_stats(_np(x), out.numpy(), torch.get_num_threads())
    return out


@register_kernel("bin_codes", "native", dtypes=F32)
def bin_codes(x: Tensor, edges: Tensor) -> Tensor:
    codes = torch.empty((x.shape[1], x.shape[0]), dtype=torch.uint8)
    _C.bin_codes(_np(x), _np(edges), codes.numpy(), torch.get_num_threads())
    return codes


@register_kernel("joint_histograms", "native", dtypes=(torch.uint8, torch.int32))
def joint_histograms(codes: Tensor, target: Tensor, n_target: int, n_bins: int) -> Tensor:
    out = torch.empty((codes.shape[0], n_target, n_bins), dtype=torch.int64)
    _C.joint_histograms(codes.numpy(), target.numpy(), n_target, n_bins, out.numpy(), torch.get_num_threads())
    return out


@register_kernel("quantize_columns", "native", dtypes=F32)
def quantize_columns(x: Tensor, scale: Tensor, offset: Tensor, qmin: int, qmax: int) -> Tensor:
    codes = torch.empty(x.shape, dtype=torch.int8 if qmin < 0 else torch.uint8)
    _C.quantize_columns(_np(x), _np(scale), _np(offset), qmin, qmax, codes.numpy(), torch.get_num_threads())
    return codes


@register_kernel("dequantize_columns", "native", dtypes=(torch.int8, torch.uint8, torch.float32))
def dequantize_columns(codes: Tensor, scale: Tensor, offset: Tensor) -> Tensor:
    out = torch.empty(codes.shape, dtype=torch.float32)
    _C.dequantize_columns(codes.numpy(), _np(scale), _np(offset), out.numpy(), torch.get_num_threads())
    return out


@register_kernel("delta_encode", "native", dtypes=F32)
def delta_encode(x: Tensor, anchor_scale: Tensor, step_scale: Tensor, block: int, qmax: int) -> Tensor:
    codes = torch.empty(x.shape, dtype=torch.int8)
    _C.delta_encode(_np(x), _np(anchor_scale), _np(step_scale), block, qmax, codes.numpy(), torch.get_num_threads())
    return codes


@register_kernel("delta_decode", "native", dtypes=(torch.int8, torch.float32))
def delta_decode(codes: Tensor, anchor_scale: Tensor, step_scale: Tensor, block: int) -> Tensor:
    out = torch.empty(codes.shape, dtype=torch.float32)
    _C.delta_decode(codes.numpy(), _np(anchor_scale), _np(step_scale), block, out.numpy(), torch.get_num_threads())
    return out
