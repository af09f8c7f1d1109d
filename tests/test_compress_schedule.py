"""compress.GradualPruner: Zhu & Gupta's cubic schedule and the linear one, exactly where they prune, counted from
the optimizer steps of the optimizers that own the model (or by hand), and its state."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fastdistill import compress
from fastdistill.compress import GradualPruner


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 8))


def test_schedules():
    p = GradualPruner(model(), 0.8, start=10, end=50, every=10, initial_sparsity=0.2, attach=False)
    assert [p.sparsity_at(t) for t in (0, 10)] == [0.2, 0.2]
    assert p.sparsity_at(30) == pytest.approx(0.8 + (0.2 - 0.8) * 0.5 ** 3)
    assert [p.sparsity_at(t) for t in (50, 99)] == [0.8, 0.8]
    lin = GradualPruner(model(), 0.8, start=10, end=50, every=10, schedule="linear", attach=False)
    assert lin.sparsity_at(20) == pytest.approx(0.2) and lin.sparsity_at(40) == pytest.approx(0.6)
    assert [t for t in range(60) if p.is_pruning_step(t)] == [10, 20, 30, 40, 50]
    odd = GradualPruner(model(), 0.5, start=3, end=20, every=7, attach=False)
    assert [t for t in range(30) if odd.is_pruning_step(t)] == [3, 10, 17, 20]  # end itself always prunes


def test_driven_by_the_optimizer_steps_of_its_model():
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    other = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    p = GradualPruner(m, 0.9, start=0, end=20, every=5)
    seen = []
    for _ in range(30):
        opt.zero_grad()
        m(torch.randn(4, 16)).pow(2).sum().backward()
        opt.step()
        other.step()  # another model's optimizer: not counted
        seen.append(compress.sparsity(m)["total"])
    assert p.steps == 30
    expected = [p.sparsity_at(t) if t in (5, 10, 15, 20) else None for t in range(1, 31)]
    for t, (s, want) in enumerate(zip(seen, expected), 1):
        if want is not None:
            assert s == pytest.approx(want, abs=2e-3), t
    assert seen[:4] == [0.0] * 4 and all(a <= b for a, b in zip(seen, seen[1:]))
    assert seen[-1] == pytest.approx(0.9, abs=1e-3)
    p.remove()
    opt.step()
    assert p.steps == 30


def test_by_hand_and_state():
    m = model()
    p = GradualPruner(m, 0.5, start=2, end=4, every=1, schedule="linear", attach=False)
    assert [p.step() for _ in range(5)] == [None, 0.0, 0.25, 0.5, None]
    assert compress.sparsity(m)["total"] == pytest.approx(0.5, abs=1e-3)
    q = GradualPruner(model(), 0.5, start=2, end=4, every=1, attach=False)
    q.load_state_dict(p.state_dict())
    assert q.steps == 5 and q.current == 0.5


def test_errors():
    m = model()
    for kw, name in [(dict(sparsity=1.2), "sparsity"), (dict(end=-1), "end"), (dict(every=0), "every"),
                     (dict(schedule="exp"), "schedule"), (dict(initial_sparsity=0.95), "initial_sparsity"),
                     (dict(method="l2"), "method"), (dict(start=1.5), "start")]:
        args = dict(sparsity=0.9, start=0, end=10, every=1)
        args.update(kw)
        with pytest.raises(ValueError, match=name):
            GradualPruner(m, args.pop("sparsity"), attach=False, **args)
    with pytest.raises(TypeError, match="model"):
        GradualPruner("m", 0.5, start=0, end=1, every=1)
    with pytest.raises(ValueError, match="nothing to prune"):
        GradualPruner(nn.ReLU(), 0.5, start=0, end=1, every=1)
