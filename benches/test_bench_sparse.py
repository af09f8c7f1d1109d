"""pytest-benchmark suite for sparse matmul: fastdistill.sparse_linear (fp32 and int8 values) vs torch.sparse.mm
(CSR) and dense F.linear as separate benchmarks of one group per batch size (4096x4096 weight, 0.9 random sparsity).

Run: ``pytest benches/ --benchmark-only`` (the ratios of ``fastdistill bench sparse`` come from the same cases)."""
import warnings

import pytest
import torch
import torch.nn.functional as F

import fastdistill as fd
from fastdistill.benchmarks.sparse import weight

N, SPARSITY = 4096, 0.9
BATCHES = [1, 32, 256]


@pytest.fixture(scope="module")
def weights():
    w = weight(N, SPARSITY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return w, fd.SparseWeight.from_dense(w), w.to_sparse_csr(), fd.SparseWeight.from_dense(w, torch.int8)


@pytest.mark.parametrize("batch", BATCHES)
def test_fastdistill_sparse_linear(benchmark, weights, batch):
    x = torch.randn(batch, N)
    benchmark.group = f"sparse 4096x4096 s=0.9 M={batch}"
    benchmark(fd.sparse_linear, x, weights[1])


@pytest.mark.parametrize("batch", BATCHES)
def test_fastdistill_sparse_linear_int8_values(benchmark, weights, batch):
    x = torch.randn(batch, N)
    benchmark.group = f"sparse 4096x4096 s=0.9 M={batch}"
    benchmark(fd.sparse_linear, x, weights[3])


@pytest.mark.parametrize("batch", BATCHES)
def test_torch_sparse_mm_csr(benchmark, weights, batch):
    x = torch.randn(batch, N)
    benchmark.group = f"sparse 4096x4096 s=0.9 M={batch}"
    benchmark(torch.sparse.mm, weights[2], x.t())


@pytest.mark.parametrize("batch", BATCHES)
def test_torch_dense_linear(benchmark, weights, batch):
    x = torch.randn(batch, N)
    benchmark.group = f"sparse 4096x4096 s=0.9 M={batch}"
    benchmark(F.linear, x, weights[0])
