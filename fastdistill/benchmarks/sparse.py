"""Sparse matmul benchmarks: fastdistill.sparse_linear on a CSR weight (fp32 values; at 0.9 sparsity also int8
values, and bf16 in the full run) against torch.sparse.mm on torch's fp32 CSR tensor and dense F.linear, for a
4096x4096 weight with random unstructured sparsity at batch 1, 32 and 256."""
from __future__ import annotations

import warnings
from typing import Iterator

import torch
import torch.nn.functional as F

import fastdistill as fd
from ..bench import Row, compare, suite

TARGETS = {(0.9, 1): (">=3x", ">=7x"), (0.9, 32): (">=1.5x", None), (0.9, 256): (">=1.5x", None)}


def weight(n: int, sparsity: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, n, generator=g)
    return w.masked_fill_(torch.rand(n, n, generator=g) < sparsity, 0)


@suite("sparse")
def sparse_suite(quick: bool) -> Iterator[Row]:
    n = 4096
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "sparse CSR support is in beta"
        for sp in (0.9,) if quick else (0.9, 0.5):
            w = weight(n, sp)
            sw = fd.SparseWeight.from_dense(w)
            wt = w.to_sparse_csr()
            for batch in (1, 32, 256):
                x = torch.randn(batch, n)
                label = f"{n}x{n} fp32 s={sp} M={batch}"
                csr_t, dense_t = TARGETS.get((sp, batch), (None, None))
                rep = 6 if batch < 256 else 3
                yield compare("sparse", label, lambda: fd.sparse_linear(x, sw), lambda: torch.sparse.mm(wt, x.t()),
                              ours_name="sparse_linear", peer_name="torch.sparse.mm (CSR)", target=csr_t, repeat=rep)
                yield compare("sparse", label, lambda: fd.sparse_linear(x, sw), lambda: F.linear(x, w),
                              ours_name="sparse_linear", peer_name="F.linear (dense fp32)", target=dense_t, repeat=rep)
            if sp == 0.9:
                swq = fd.SparseWeight.from_dense(w, torch.int8)
                for batch in (1, 32, 256):
                    x = torch.randn(batch, n)
                    label = f"{n}x{n} int8 values s={sp} M={batch}"
                    rep = 6 if batch < 256 else 3
                    yield compare("sparse", label, lambda: fd.sparse_linear(x, swq), lambda: torch.sparse.mm(wt, x.t()),
                                  ours_name="sparse_linear (int8 values)", peer_name="torch.sparse.mm (CSR fp32)",
                                  repeat=rep)
                    yield compare("sparse", label, lambda: fd.sparse_linear(x, swq), lambda: F.linear(x, w),
                                  ours_name="sparse_linear (int8 values)", peer_name="F.linear (dense fp32)",
                                  target=">=3x" if batch == 1 else None, repeat=rep)
            if not quick and sp == 0.9:
                swb = fd.SparseWeight.from_dense(w, torch.bfloat16)
                for batch in (1, 32):
                    x = torch.randn(batch, n)
                    yield compare("sparse", f"{n}x{n} bf16 values s={sp} M={batch}", lambda: fd.sparse_linear(x, swb),
                                  lambda: torch.sparse.mm(wt, x.t()), ours_name="sparse_linear (bf16 values)",
                                  peer_name="torch.sparse.mm (CSR fp32)", repeat=6)
