"""pytest-benchmark suite for pruning: ours and the PyTorch/NumPy peers as separate benchmarks of one group.

Run: ``pytest benches/ --benchmark-only`` (the ratios of ``fastdistill bench prune`` come from the same cases)."""
import numpy as np
import pytest
import torch
import torch.nn.utils.prune as tprune

import fastdistill as fd

SHAPE = (4096, 4096)
SPARSITY = 0.9


@pytest.fixture(scope="module")
def weight():
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))


@pytest.mark.benchmark(group="magnitude_mask 4096x4096 s=0.9")
def test_fastdistill_magnitude_mask(benchmark, weight):
    benchmark(fd.magnitude_mask, weight, SPARSITY)


@pytest.mark.benchmark(group="magnitude_mask 4096x4096 s=0.9")
def test_torch_l1_unstructured(benchmark, weight):
    def run():
        lin = torch.nn.Linear(1, 1, bias=False)
        lin.weight = torch.nn.Parameter(weight)
        tprune.l1_unstructured(lin, "weight", amount=SPARSITY)

    benchmark.pedantic(run, rounds=3, iterations=1)


@pytest.mark.benchmark(group="magnitude_mask 4096x4096 s=0.9")
def test_numpy_partition(benchmark, weight):
    w = weight.numpy().reshape(-1)
    k = round(SPARSITY * w.size)
    benchmark(lambda: np.partition(np.abs(w), k - 1))


@pytest.mark.benchmark(group="magnitude_mask 4096x4096 s=0.9")
def test_floor_abs_out(benchmark, weight):
    buf = torch.empty_like(weight)
    benchmark(torch.abs, weight, out=buf)


@pytest.mark.benchmark(group="nm_mask 2:4 4096x4096")
def test_fastdistill_nm_mask(benchmark, weight):
    benchmark(fd.nm_mask, weight, 2, 4)


@pytest.mark.benchmark(group="nm_mask 2:4 4096x4096")
def test_torch_topk_nm(benchmark, weight):
    def run():
        groups = weight.abs().reshape(-1, 4)
        return torch.zeros_like(groups, dtype=torch.bool).scatter_(1, groups.topk(2, dim=1).indices, True)

    benchmark(run)
