"""pytest-benchmark suite for the Distiller's overhead: ``Distiller.step`` and the hand-written loop doing the same
work (see fastdistill/benchmarks/distill.py), as two benchmarks of one group per case.

Run: ``pytest benches/test_bench_distill.py --benchmark-only`` (``fastdistill bench distill`` gives the ratio)."""
import copy

import pytest
import torch

from fastdistill.benchmarks.distill import CASES, distiller_step, hand_step, models


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def case(request):
    label, d_in, wt, ws, classes, batch = request.param
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, d_in, generator=g), torch.randint(0, classes, (batch,), generator=g)
    return label, models(d_in, wt, ws, classes), x, y


@pytest.mark.parametrize("features", [False, True], ids=["kd", "kd+features"])
@pytest.mark.parametrize("loop", ["distiller", "hand"])
def test_step(benchmark, case, features, loop):
    label, (teacher, student), x, y = case
    benchmark.group = f"{label} {'kd+features' if features else 'kd'}"
    make = distiller_step if loop == "distiller" else hand_step
    step = make(copy.deepcopy(teacher), copy.deepcopy(student), features)
    benchmark(step, x, y)
