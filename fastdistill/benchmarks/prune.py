"""Pruning benchmarks: magnitude_mask / prune_ / nm_mask against torch.nn.utils.prune, np.partition, torch.topk."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.utils.prune as tprune

import fastdistill as fd
from ..bench import Row, compare, suite


def _l1_unstructured(w: torch.Tensor, sparsity: float) -> None:
    # torch.nn.utils.prune on a module holding w (the module setup is cheap next to the pruning itself).
    lin = torch.nn.Linear(1, 1, bias=False)
    lin.weight = torch.nn.Parameter(w)
    tprune.l1_unstructured(lin, "weight", amount=sparsity)


@suite("prune")
def prune_suite(quick: bool) -> Iterator[Row]:
    sizes = [(2048, 2048)] if quick else [(2048, 2048), (4096, 4096)]
    sp = 0.9
    for shape in sizes:
        w = torch.randn(shape)
        wn = w.numpy()
        n = w.numel()
        label = f"{shape[0]}x{shape[1]} fp32 s={sp}"
        buf = torch.empty_like(w)
        floor = lambda: torch.abs(w, out=buf)  # noqa: E731  one read + one write pass
        ours = lambda: fd.magnitude_mask(w, sp)  # noqa: E731
        yield compare("prune", label, ours, lambda: _l1_unstructured(w, sp), ours_name="magnitude_mask",
                      peer_name="prune.l1_unstructured", floor=floor, floor_name="abs(out=)", repeat=3 if n > 4e6 else 6,
                      target=">=100x peer, <=1.6x floor")
        k = round(sp * n)
        yield compare("prune", label, ours, lambda: np.partition(np.abs(wn).reshape(-1), k - 1), ours_name="magnitude_mask",
                      peer_name="np.partition(|w|)", target=">=10x peer")
        yield compare("prune", label, ours, lambda: torch.kthvalue(w.abs().reshape(-1), k), ours_name="magnitude_mask",
                      peer_name="torch.kthvalue(|w|)")
        wc = w.clone()
        yield compare("prune", label, lambda: fd.prune_(wc, sp), lambda: wc.masked_fill_(wc.abs() <= 0.0, 0),
                      ours_name="prune_ (in place)", peer_name="abs+compare+masked_fill_ (no selection)", floor=floor,
                      floor_name="abs(out=)", target="<=2.5x floor")
        yield compare("prune", label, lambda: fd.nm_mask(w, 2, 4),
                      lambda: torch.zeros(n // 4, 4, dtype=torch.bool).scatter_(
                          1, w.abs().reshape(-1, 4).topk(2, dim=1).indices, True),
                      ours_name="nm_mask 2:4", peer_name="topk(2) per group + scatter", floor=floor,
                      floor_name="abs(out=)", target="<=2.5x floor")
