"""Argument checks shared by the data-compression kernels of every backend (backends/*/data.py); the native
drivers make the same checks in C++ (csrc/cpu/data.cpp) with the same messages."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def nonfinite_error(bad: int) -> ValueError:
    return ValueError(f"x: {bad} value(s) are NaN or infinite; expected finite values")


def check_finite(x: Tensor) -> None:
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise nonfinite_error(bad)


def check_scales(scale: Tensor, name: str) -> None:
    bad = ~(torch.isfinite(scale) & (scale > 0))
    if bool(bad.any()):
        j = int(bad.nonzero()[0, 0])
        raise ValueError(f"{name}: expected finite positive scales, column {j} has {float(scale[j])}")


def check_edges(edges: Tensor) -> None:
    if edges.shape[1] > 255:
        raise ValueError(f"edges: expected at most 255 edges per feature, got {edges.shape[1]}")
    bad = torch.isnan(edges).any(1) | (edges[:, 1:] < edges[:, :-1]).any(1)
    if bool(bad.any()):
        raise ValueError(f"edges: feature {int(bad.nonzero()[0, 0])} has NaN or unsorted edges")


def check_code_range(scale: Tensor, offset: Tensor, qmin: int, qmax: int) -> None:
    if not (qmin < qmax and qmin >= -128 and qmax <= (127 if qmin < 0 else 255)):
        raise ValueError(f"qmin, qmax: expected a range within int8 or uint8, got [{qmin}, {qmax}]")
    check_scales(scale, "scale")
    bad = ~torch.isfinite(offset)
    if bool(bad.any()):
        j = int(bad.nonzero()[0, 0])
        raise ValueError(f"offset: expected finite offsets, column {j} has {float(offset[j])}")


def check_delta(anchor_scale: Tensor, step_scale: Tensor, block: int, qmax: Optional[int] = None) -> None:
    if block < 1:
        raise ValueError(f"block: expected at least 1, got {block}")
    if qmax is not None and not 1 <= qmax <= 127:
        raise ValueError(f"qmax: expected 1..127, got {qmax}")
    check_scales(anchor_scale, "anchor_scale")
    check_scales(step_scale, "step_scale")


def check_histogram_args(n_target: int, n_bins: int) -> None:
    if not 1 <= n_bins <= 256:
        raise ValueError(f"n_bins: expected 1..256, got {n_bins}")
    if n_target < 1:
        raise ValueError(f"n_target: expected at least 1, got {n_target}")


def histogram_error(bad: int) -> ValueError:
    return ValueError(f"{bad} code(s) >= n_bins or target value(s) outside [0, n_target)")


def rows_error(bad: int) -> ValueError:
    return ValueError(f"x: {bad} row(s) hold NaN or infinite values (or values whose squares overflow float32)")


def centroid_norms(c: Tensor) -> Tensor:
    """fp32 squared norms of the centroids (k, d); raises when there is none or one is not finite."""
    if c.shape[0] < 1:
        raise ValueError("centroids: expected at least one centroid")
    cn = (c * c).sum(1)
    bad = ~torch.isfinite(cn)
    if bool(bad.any()):
        raise ValueError(f"centroids: centroid {int(bad.nonzero()[0, 0])} is not finite (or its squared norm "
                         "overflows float32)")
    return cn


def check_labels(labels: Tensor, k: int) -> None:
    if k < 1:
        raise ValueError(f"k: expected at least one centroid, got {k}")
    bad = int(((labels < 0) | (labels >= k)).sum())
    if bad:
        raise ValueError(f"labels: {bad} label(s) outside [0, {k})")
