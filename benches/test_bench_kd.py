"""pytest-benchmark suite for the fused distillation loss: ``kd_loss`` forward + backward and the naive torch
expression (``kl_div(log_softmax) * T^2 * alpha + (1 - alpha) * cross_entropy``) as separate benchmarks of one group
per shape. Run: ``pytest benches/test_bench_kd.py --benchmark-only`` (``fastdistill bench kd`` times the same cases
and also reports peak extra memory)."""
import pytest

from fastdistill.benchmarks.kd import SHAPES, inputs, naive_loss, ours_loss, step


@pytest.fixture(scope="module", params=SHAPES, ids=lambda bv: f"{bv[0]}x{bv[1]}")
def case(request):
    return inputs(*request.param)


def _group(case) -> str:
    s = case[0]
    return f"kd_loss fwd+bwd {s.shape[0]}x{s.shape[1]} fp32 T=2 alpha=0.5"


def test_fastdistill_kd_loss(benchmark, case):
    benchmark.group = _group(case)
    benchmark.pedantic(step, args=(ours_loss, *case), rounds=5, warmup_rounds=1)


def test_torch_naive_kl_div_cross_entropy(benchmark, case):
    benchmark.group = _group(case)
    benchmark.pedantic(step, args=(naive_loss, *case), rounds=3, warmup_rounds=1)
