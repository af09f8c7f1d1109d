"""Reference pruning kernels in plain torch, written for clarity.

Selection rule shared by every backend: the k pruned elements are the k smallest magnitudes; among equal
magnitudes at the boundary, earlier elements are pruned first (order: tensor position in the list, then flat
index). N:M keeps the n largest magnitudes per group, the lower index winning ties.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor

from ..._dispatch import register_kernel

DEVICES = ("cpu", "cuda")


def _magnitudes(xs: List[Tensor]) -> Tensor:
    """|x| of all tensors, flattened and concatenated, in a dtype that holds every input exactly."""
    dtype = torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32
    flat = [x.detach().reshape(-1).to(dtype).abs() for x in xs]
    if not flat:
        return torch.empty(0, dtype=dtype)
    return torch.cat(flat)


def check_no_nan(mags: Tensor) -> None:
    nans = int(torch.isnan(mags).sum())
    if nans:
        raise ValueError(f"x contains {nans} NaN value(s); magnitude pruning needs finite or infinite values")


def select(xs: List[Tensor], k: int) -> Tuple[Tensor, List[Tensor]]:
    """(threshold, keep-masks): the k-th smallest magnitude and masks pruning exactly k elements."""
    mags = _magnitudes(xs)
    check_no_nan(mags)
    keep = torch.ones(mags.shape, dtype=torch.bool, device=mags.device)
    if k == 0:
        threshold = torch.tensor(float("-inf"), dtype=mags.dtype, device=mags.device)
    else:
        threshold = torch.kthvalue(mags.cpu(), k).values.to(mags.device)
        below = mags < threshold
        ties = torch.nonzero(mags == threshold).reshape(-1)
        keep &= ~below
        keep[ties[: k - int(below.sum())]] = False
    sizes = [x.numel() for x in xs]
    masks = [m.reshape(x.shape).clone() for m, x in zip(torch.split(keep, sizes), xs)]  # custom ops: no aliasing
    return threshold, masks


@register_kernel("magnitude_threshold", "python", devices=DEVICES)
def magnitude_threshold(xs: List[Tensor], k: int) -> Tensor:
    return select(xs, k)[0]


@register_kernel("magnitude_masks", "python", devices=DEVICES)
def magnitude_masks(xs: List[Tensor], k: int) -> List[Tensor]:
    return select(xs, k)[1]


@register_kernel("magnitude_prune_", "python", devices=DEVICES)
def magnitude_prune_(x: Tensor, k: int) -> Tensor:
    mask = select([x], k)[1][0]
    with torch.no_grad():
        x.masked_fill_(~mask, 0)
    return mask


@register_kernel("nm_mask", "python", devices=DEVICES)
def nm_mask(x: Tensor, n: int, m: int) -> Tensor:
    groups = x.detach().reshape(-1, m).float().abs() if x.dtype != torch.float64 else x.detach().reshape(-1, m).abs()
    check_no_nan(groups)
    # Stable sort by descending magnitude: position in the sorted order is the rank, lower index first on ties.
    order = torch.sort(groups, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(m, device=x.device).expand_as(order))
    return (rank < n).reshape(x.shape)
