"""CSR matmul backed by ``fastdistill._C`` (see csrc/cpu/sparse*.cpp).

Small batches run per-sample gather dot products, larger ones a tiled AXPY. Where one overtakes the other follows
the CPU's gather throughput (vgatherdps costs 2-4x more per element on some AVX2 CPUs than on recent ones), so the
crossover comes from :func:`sparse_route`: a small measurement made once per process, SIMD level and thread count.
"""
from __future__ import annotations

import time
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ... import _C
from ..._dispatch import register_kernel
from ..._timing import best_ms
from .._buffers import float_array
from .._csr import linear_reason, spmm_reason

# The probe: a PROBE_N x PROBE_N weight at PROBE_SPARSITY, batches 1.. PROBE_MAX_BATCH, each kernel its fastest of
# five calls; it stops at the first batch the tiled kernel wins, or after PROBE_BUDGET_MS.
PROBE_N = 1024
PROBE_SPARSITY = 0.9
PROBE_MAX_BATCH = 8
PROBE_BUDGET_MS = 50.0

_ROUTES: Dict[Tuple[str, int], dict] = {}


def _array(t: Optional[Tensor]) -> Optional[np.ndarray]:
    return None if t is None else t.detach().numpy()


def _probe() -> dict:
    rng = np.random.default_rng(0)
    per_row = round(PROBE_N * (1 - PROBE_SPARSITY))  # random columns (unsorted, as the kernels allow)
    indptr = np.arange(0, PROBE_N * per_row + 1, per_row, dtype=np.int64)
    indices = rng.integers(0, PROBE_N, PROBE_N * per_row, dtype=np.int16)
    values = rng.standard_normal(indices.size, dtype=np.float32)
    nthreads = torch.get_num_threads()
    timings: Dict[int, Tuple[float, float]] = {}  # batch -> (gather, tiled) in ms
    start = time.perf_counter()
    gather_max = 0
    for m in range(1, PROBE_MAX_BATCH + 1):
        x = rng.standard_normal((m, PROBE_N)).astype(np.float32)
        out = np.empty((m, PROBE_N), np.float32)

        def kernel_ms(gather_max_batch: int) -> float:
            return best_ms(lambda: _C.sparse_matmul(indptr, indices, values, PROBE_N, x, False, out, False,
                                                    nthreads=nthreads, gather_max_batch=gather_max_batch))

        timings[m] = (kernel_ms(m), kernel_ms(0))
        if timings[m][0] >= timings[m][1]:
            break
        gather_max = m
        if (time.perf_counter() - start) * 1e3 > PROBE_BUDGET_MS:
            break
    return {"gather_max_batch": gather_max, "timings_ms": timings}


def sparse_route() -> dict:
    """``{"gather_max_batch": the largest batch that runs gather dot products here, "timings_ms": {batch: (gather,
    tiled)}}``, measured once per SIMD level and thread count."""
    key = (_C.simd_level(), torch.get_num_threads())
    if key not in _ROUTES:
        _ROUTES[key] = _probe()
    return _ROUTES[key]


def _gather_max_batch(m: int) -> int:
    # one sample always gathers (a tile would fill one lane of each vector), batches beyond the probe's range always
    # tile: neither needs the measurement
    if m <= 1 or m > PROBE_MAX_BATCH:
        return 1
    return sparse_route()["gather_max_batch"]


@register_kernel("sparse_linear", "native", supports=linear_reason)
def sparse_linear(x: Tensor, indptr: Tensor, indices: Tensor, values: Tensor, n_cols: int,
                  bias: Optional[Tensor], scale: Optional[Tensor] = None) -> Tensor:
    out = torch.empty((x.shape[0], indptr.numel() - 1), dtype=torch.float32)
    _C.sparse_matmul(indptr.numpy(), indices.numpy(), float_array(values), n_cols, x.detach().numpy(), False,
                     out.numpy(), False, bias=_array(bias), scale=_array(scale),
                     nthreads=torch.get_num_threads(), gather_max_batch=_gather_max_batch(x.shape[0]))
    return out


@register_kernel("spmm", "native", supports=spmm_reason)
def spmm(indptr: Tensor, indices: Tensor, values: Tensor, n_cols: int, b: Tensor,
         scale: Optional[Tensor] = None) -> Tensor:
    out = torch.empty((indptr.numel() - 1, b.shape[1]), dtype=torch.float32)
    _C.sparse_matmul(indptr.numpy(), indices.numpy(), float_array(values), n_cols, b.detach().numpy(), True,
                     out.numpy(), True, scale=_array(scale), nthreads=torch.get_num_threads(),
                     gather_max_batch=_gather_max_batch(b.shape[1]))
    return out
