"""Reference Wanda mask in plain torch: per row, the k lowest scores |w| * norm (fp32 product) are pruned, ties at
the boundary pruned lower column first."""
from __future__ import annotations

import torch
from torch import Tensor

from ..._dispatch import register_kernel
from .prune import check_no_nan

DEVICES = ("cpu", "cuda")


@register_kernel("wanda_mask", "python", devices=DEVICES)
def wanda_mask(w: Tensor, norms: Tensor, k: int) -> Tensor:
    scores = w.detach().float().abs() * norms.float()[None, :]
    check_no_nan(scores)
    keep = torch.ones(w.shape, dtype=torch.bool, device=w.device)
    if k and w.shape[0]:
        order = torch.sort(scores, dim=1, stable=True).indices[:, :k]
        keep.scatter_(1, order, False)
    return keep
