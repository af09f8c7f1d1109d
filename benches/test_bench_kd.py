"""pytest-benchmark suite for the distillation losses, forward + backward, as separate benchmarks of one group per
shape: ``kd_loss`` against the naive torch expression (``kl_div(log_softmax) * T^2 * alpha + (1 - alpha) *
cross_entropy``), and ``fused_linear_kd_loss`` against ``F.linear`` for both LM heads + that expression.
Run: ``pytest benches/test_bench_kd.py --benchmark-only`` (``fastdistill bench kd`` times the same cases and also
reports peak extra memory)."""
import pytest

from fastdistill.benchmarks.kd import (LINEAR_SHAPES, SHAPES, fused_linear_loss, inputs, linear_inputs, linear_step,
                                       naive_linear_loss, naive_loss, ours_loss, step)


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


@pytest.fixture(scope="module", params=LINEAR_SHAPES, ids=lambda bvd: "B{}-V{}-d{}".format(*bvd))
def linear_case(request):
    return linear_inputs(*request.param)


def _linear_group(case) -> str:
    hs, ws = case[:2]
    return f"LM heads + kd loss fwd+bwd B={hs.shape[0]} V={ws.shape[0]} d={hs.shape[1]} fp32"


def test_fastdistill_fused_linear_kd_loss(benchmark, linear_case):
    benchmark.group = _linear_group(linear_case)
    benchmark.pedantic(linear_step, args=(fused_linear_loss, *linear_case), rounds=3, warmup_rounds=1)


def test_torch_linear_then_naive_loss(benchmark, linear_case):
    benchmark.group = _linear_group(linear_case)
    benchmark.pedantic(linear_step, args=(naive_linear_loss, *linear_case), rounds=3, warmup_rounds=1)
