"""kd_loss(weighting="info_entropy"): every backend against a float64 autograd oracle that computes the teacher's
entropy independently (torch.special.entr), all divergences, ignored rows, log-probability teachers, and the
documented edge cases (V = 1, every teacher uniform)."""
from __future__ import annotations

import math

import pytest
import torch

import fastdistill as fd
from test_kd import assert_close, logits, natural_scale, oracle, ours, skip_unless_served, targets

SHAPES = [(1, 1), (7, 13), (3, 4, 1000), (2, 3, 513)]


def entropy_weights(lp: torch.Tensor, y, ignore_index: int = -100) -> torch.Tensor:
    """w = u N / sum u over the rows that count, u = 1 - H / log V, from the teacher's log-probabilities lp."""
    V = lp.shape[-1]
    h = torch.special.entr(lp.exp()).sum(-1)
    u = (1 - h / math.log(V)).clamp(0, 1) if V > 1 else torch.ones_like(h)
    valid = torch.ones_like(u, dtype=torch.bool) if y is None else y != ignore_index
    u = torch.where(valid, u, 0.0)
    return u * (int(valid.sum()) / float(u.sum())) if float(u.sum()) > 0 else torch.zeros_like(u)


def weighted_oracle(s, t, y, **kw):
    return oracle(s, t, y, row_weights=lambda lp: entropy_weights(lp, y), **kw)


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("reduction", ["batchmean", "mean", "none"])
def test_info_entropy_matches_oracle(backend, gen, shape, divergence, reduction):
    skip_unless_served(torch.float32)
    s, t = logits(shape, gen).to(backend), (logits(shape, gen) / 4).to(backend)
    y = targets(shape, shape[-1], gen).to(backend)
    kw = dict(temperature=2.0, alpha=0.7, divergence=divergence, reduction=reduction)
    got = ours(s, t, y, weighting="info_entropy", **kw)
    want = weighted_oracle(s.cpu(), t.cpu(), y.cpu(), **kw)
    assert_close(got[0].cpu(), got[1].cpu(), *want, rtol=2e-5, grad_rtol=2e-5, scale=natural_scale(shape, y, kw))


@pytest.mark.parametrize("teacher_log_probs", [False, True])
def test_info_entropy_without_targets_and_log_prob_teachers(backend, gen, teacher_log_probs):
    skip_unless_served(torch.float32)
    shape = (9, 77)
    s, t = logits(shape, gen), logits(shape, gen) / 4
    if teacher_log_probs:
        t = torch.log_softmax(t.double(), -1).float()
    kw = dict(temperature=1.0 if teacher_log_probs else 3.0, alpha=1.0, teacher_log_probs=teacher_log_probs)
    got = ours(s.to(backend), t.to(backend), None, weighting="info_entropy", **kw)
    want = weighted_oracle(s, t, None, **kw)
    assert_close(got[0].cpu(), got[1].cpu(), *want, rtol=2e-5, grad_rtol=2e-5, scale=natural_scale(shape, None, kw))


def test_info_entropy_weights_are_the_teachers_confidence(backend):
    """A confident teacher row outweighs a nearly uniform one; the weights average 1 over the counted rows; a
    batch of uniform teachers has no distillation term; V = 1 gives weight 1."""
    skip_unless_served(torch.float32)
    V = 50
    t = torch.zeros(3, V)
    t[0, 3] = 12.0  # confident
    t[1, 5] = 0.5   # nearly uniform
    s = torch.randn(3, V)
    y = torch.tensor([3, 5, -100])  # the third row is ignored
    per_row = fd.kd_loss(s.to(backend), t.to(backend), y.to(backend), alpha=1.0, reduction="none",
                         weighting="info_entropy").cpu()
    plain = fd.kd_loss(s.to(backend), t.to(backend), y.to(backend), alpha=1.0, reduction="none").cpu()
    w = per_row / plain
    assert float(w[0]) > 10 * float(w[1]) > 0 and float(per_row[2]) == 0.0
    assert abs(float(w[:2].sum()) - 2.0) < 1e-5
    uniform = fd.kd_loss(s.to(backend), torch.zeros(3, V).to(backend), None, alpha=0.5, reduction="none",
                         weighting="info_entropy").cpu()
    assert float(uniform.abs().max()) == 0.0
    one = fd.kd_loss(torch.randn(4, 1).to(backend), torch.randn(4, 1).to(backend), torch.zeros(4, dtype=torch.long)
                     .to(backend), alpha=0.5, weighting="info_entropy")
    assert float(one) == pytest.approx(0.0, abs=1e-7)


def test_weighting_is_checked():
    with pytest.raises(ValueError, match="weighting"):
        fd.kd_loss(torch.randn(2, 3), torch.randn(2, 3), weighting="entropy")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_info_entropy_half_precision(backend, gen, dtype):
    skip_unless_served(dtype)
    shape = (6, 301)
    s, t = logits(shape, gen).to(dtype), (logits(shape, gen) / 4).to(dtype)
    y = targets(shape, shape[-1], gen)
    kw = dict(temperature=2.0, alpha=0.6)
    got = ours(s.to(backend), t.to(backend), y.to(backend), weighting="info_entropy", **kw)
    want = weighted_oracle(s.float(), t.float(), y, **kw)  # the oracle on the same (rounded) values
    assert_close(got[0].cpu(), got[1].cpu().float(), *want, rtol=1e-3, grad_rtol=1e-2,
                 scale=natural_scale(shape, y, kw))


def test_info_entropy_opcheck(backend, gen):
    from fastdistill import _ops

    dtype = torch.float64 if fd.get_backend() in ("python", "numba") else torch.float32
    s = logits((4, 3, 33), gen, dtype).to(backend).requires_grad_()
    t = logits((4, 3, 33), gen, dtype).to(backend)
    y = targets((4, 3, 33), 33, gen).to(backend)
    torch.library.opcheck(_ops.kd_loss, (s, t, y, 2.0, 0.5, "kl", 0.5, -100, "mean", False, "info_entropy", True))
