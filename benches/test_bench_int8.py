"""pytest-benchmark suite for int8: Int8Linear against quantize_dynamic's Linear and fp32 F.linear, and int8_mm
against torch._int_mm, as separate benchmarks of one group per shape.

Run: ``pytest benches/ --benchmark-only`` (the ratios of ``fastdistill bench int8`` come from the same cases)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastdistill as fd
from fastdistill.benchmarks.int8 import BATCHES, WEIGHTS, quantize_dynamic_linear

CASES = [(n, k, m) for n, k in WEIGHTS for m in BATCHES]


@pytest.fixture(scope="module")
def layers():
    torch.manual_seed(0)
    out = {}
    for n, k in WEIGHTS:
        lin = nn.Linear(k, n)
        out[(n, k)] = (lin, fd.nn.Int8Linear.from_float(lin), quantize_dynamic_linear(lin))
    return out


def _group(n, k, m):
    return f"Linear {n}x{k} M={m}"


@pytest.mark.parametrize("n,k,m", CASES)
def test_fastdistill_int8linear(benchmark, layers, n, k, m):
    benchmark.group = _group(n, k, m)
    x = torch.randn(m, k)
    with torch.no_grad():
        benchmark(layers[(n, k)][1], x)


@pytest.mark.parametrize("n,k,m", CASES)
def test_quantize_dynamic_linear(benchmark, layers, n, k, m):
    benchmark.group = _group(n, k, m)
    x = torch.randn(m, k)
    with torch.no_grad():
        benchmark(layers[(n, k)][2], x)


@pytest.mark.parametrize("n,k,m", CASES)
def test_fp32_linear(benchmark, layers, n, k, m):
    benchmark.group = _group(n, k, m)
    x = torch.randn(m, k)
    lin = layers[(n, k)][0]
    with torch.no_grad():
        benchmark(F.linear, x, lin.weight, lin.bias)


@pytest.fixture(scope="module")
def mats():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (2048, 2048), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (2048, 2048), generator=g, dtype=torch.int8)
    return a, b, fd.prepack_int8_weight(b)


@pytest.mark.benchmark(group="int8_mm 2048^3")
def test_fastdistill_int8_mm(benchmark, mats):
    benchmark(fd.int8_mm, mats[0], mats[2])


@pytest.mark.benchmark(group="int8_mm 2048^3")
def test_torch_int_mm(benchmark, mats):
    benchmark(torch._int_mm, mats[0], mats[1])
