"""kd_loss: every backend against an independent float64 autograd oracle (loss and gradient within 1e-5 relative
for fp32 inputs), all divergences and reductions, ignored rows, odd shapes, fp16/bf16, gradcheck, opcheck, errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastdistill as fd
from fastdistill import _ops

DIVERGENCES = ["kl", "reverse_kl", "jsd"]
REDUCTIONS = ["batchmean", "mean", "sum", "none"]
# (B, V) and (B, T, V); V = 1, odd, not a multiple of 16, one past the kernel's 512-element chunk, many chunks
SHAPES = [(1, 1), (7, 13), (5, 129), (3, 4, 1000), (2, 3, 513), (2, 40001)]
SERVED = {"numba": (torch.float32, torch.float64), "native": (torch.float32, torch.float16, torch.bfloat16)}


def skip_unless_served(*dtypes: torch.dtype) -> None:
    served = SERVED.get(fd.get_backend())
    if served is not None and any(d not in served for d in dtypes):
        pytest.skip(f"{fd.get_backend()} backend does not serve {dtypes}")


def oracle(s, t, y, *, temperature=1.0, alpha=0.5, divergence="kl", beta=0.5, ignore_index=-100,
           reduction="batchmean", teacher_log_probs=False, grad_output=None, row_weights=None):
    """Float64 loss and d(loss . grad_output)/ds by autograd, from torch's own kl_div / cross_entropy.
    ``row_weights(teacher log-probabilities)``: per-row weights of the divergence, if given."""
    s64 = s.detach().double().requires_grad_()
    T = temperature
    ls = F.log_softmax(s64 / T, -1)
    lp = t.double() if teacher_log_probs else F.log_softmax(t.double() / T, -1)

    def kl(log_a, log_b):  # KL(a || b) per row; 0 log 0 = 0 (F.kl_div gives NaN for -inf log-targets)
        a = log_a.exp()
        return torch.where(a > 0, a * (log_a - log_b), 0.0).sum(-1)

    if divergence == "kl":
        d = kl(lp, ls)
    elif divergence == "reverse_kl":
        d = kl(ls, lp)
    else:
        lm = torch.logaddexp(lp + math.log(beta), ls + math.log(1 - beta))
        d = beta * kl(lp, lm) + (1 - beta) * kl(ls, lm)
    if row_weights is not None:
        d = row_weights(lp) * d
    return with_ce_reduced(s64, alpha * T * T * d, y, alpha=alpha, ignore_index=ignore_index, reduction=reduction,
                           grad_output=grad_output)


def with_ce_reduced(s64, row, y, *, alpha, ignore_index, reduction, grad_output):
    """Float64 loss and d(loss . grad_output)/ds of the per-row divergences ``row`` (a function of the leaf
    ``s64``) plus (1 - alpha) CE, reduced as kd_loss documents."""
    valid = torch.ones(row.shape, dtype=torch.bool)
    if y is not None:
        valid = y != ignore_index
        ce = F.cross_entropy(s64.reshape(-1, s64.shape[-1]), y.reshape(-1), ignore_index=ignore_index,
                             reduction="none").reshape(row.shape)
        row = torch.where(valid, row + (1 - alpha) * ce, 0.0)
    if reduction == "sum":
        loss = row.sum()
    elif reduction == "batchmean":
        loss = row.sum() / s64.shape[0]
    elif reduction == "mean":
        loss = row.sum() / max(1, int(valid.sum()))
    else:
        loss = row
    w = torch.ones_like(loss) if grad_output is None else grad_output.double()
    (g,) = torch.autograd.grad((loss * w).sum(), s64)
    return loss.detach(), g


def ours(s, t, y, grad_output=None, loss_fn=fd.kd_loss, **kw):
    leaf = s.detach().clone().requires_grad_()
    loss = loss_fn(leaf, t, y, **kw)
    w = torch.ones_like(loss) if grad_output is None else grad_output.to(loss.dtype)
    if kw.get("reduction", "batchmean") == "none":
        loss.backward(w)
    else:
        (loss * w).backward() if grad_output is not None else loss.backward()
    return loss.detach(), leaf.grad


def logits(shape, gen, dtype=torch.float32):
    scale = float(torch.empty(()).uniform_(1.0, 30.0, generator=gen))
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


def targets(shape, V, gen, ignore_index=-100, p_ignore=0.25):
    y = torch.randint(0, V, shape[:-1], generator=gen)
    drop = torch.rand(y.shape, generator=gen) < p_ignore
    return torch.where(drop, torch.full_like(y, ignore_index), y)


def natural_scale(shape, y, kw, grad_output=None):
    """The size of a gradient entry when probabilities are O(1): (alpha T + 1 - alpha) times the reduction's factor.
    Entries are differences of probabilities, so in fp32 their error is relative to this, not to the entry (for a
    row where student and teacher are both nearly one-hot, q - p is tiny but each of q, p carries 6e-8 of rounding)."""
    T, alpha, reduction = kw.get("temperature", 1.0), kw.get("alpha", 0.5), kw.get("reduction", "batchmean")
    factor = {"batchmean": 1 / shape[0], "sum": 1.0, "none": 1.0}.get(reduction)
    if factor is None:
        factor = 1 / max(1, int((y != kw.get("ignore_index", -100)).sum()) if y is not None else
                         math.prod(shape[:-1]))
    w = 1.0 if grad_output is None else float(grad_output.abs().max())
    return (alpha * T + 1 - alpha) * factor * w


def assert_close(got_loss, got_grad, want_loss, want_grad, rtol=1e-5, grad_rtol=1e-5, scale=0.0):
    """Loss within rtol relative (per entry for reduction='none'; 1e-6 absolute for losses that vanish, such as
    any divergence at V = 1); gradient within grad_rtol of max(its largest entry, scale)."""
    want_loss = want_loss.to(torch.float64)
    err = (got_loss.double() - want_loss).abs() - rtol * want_loss.abs()
    assert float(err.max()) <= 1e-6 if err.numel() else True, (got_loss, want_loss)
    gmax = float(want_grad.abs().max()) if want_grad.numel() else 0.0
    gerr = float((got_grad.double() - want_grad).abs().max()) if want_grad.numel() else 0.0
    assert gerr <= grad_rtol * max(gmax, scale, 1e-30), (gerr, gmax, scale)


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64_oracle(backend, gen, divergence, shape):
    s, t = logits(shape, gen), logits(shape, gen)
    y = targets(shape, shape[-1], gen)
    # T = 2 has its own native path (softmax at T = 1 as the square of the one at T = 2)
    settings = [(1.0, 0.5, r) for r in REDUCTIONS] + [(2.5, 0.3, "batchmean"), (0.7, 1.0, "mean"), (2.0, 0.4, "sum")]
    for temperature, alpha, reduction in settings:
        kw = dict(temperature=temperature, alpha=alpha, divergence=divergence, reduction=reduction,
                  beta=0.3 if divergence == "jsd" else 0.5)
        got = ours(s.to(backend), t.to(backend), y.to(backend), **kw)
        assert_close(got[0].cpu(), got[1].cpu(), *oracle(s, t, y, **kw), scale=natural_scale(shape, y, kw))


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_without_target_and_with_grad_output(backend, gen, divergence):
    shape = (6, 2, 77)
    s, t = logits(shape, gen), logits(shape, gen)
    for reduction in REDUCTIONS:
        w = torch.rand(shape[:-1] if reduction == "none" else (), generator=gen, dtype=torch.float64) + 0.5
        kw = dict(temperature=2.0, alpha=0.8, divergence=divergence, reduction=reduction)
        got = ours(s.to(backend), t.to(backend), None, grad_output=w.to(backend), **kw)
        assert_close(got[0].cpu(), got[1].cpu(), *oracle(s, t, None, grad_output=w, **kw),
                     scale=natural_scale(shape, None, kw, w))


def test_cross_entropy_only_and_all_ignored(backend, gen):
    s, t = logits((9, 300), gen), logits((9, 300), gen)
    y = targets((9, 300), 300, gen, ignore_index=7)
    for temperature in (1.0, 3.0):  # alpha=0: the temperature must not matter
        got = ours(s.to(backend), t.to(backend), y.to(backend), alpha=0.0, ignore_index=7, reduction="mean",
                   temperature=temperature)
        assert_close(got[0].cpu(), got[1].cpu(), *oracle(s, t, y, alpha=0.0, ignore_index=7, reduction="mean"))
    y_all = torch.full((9,), -100)
    for reduction in REDUCTIONS:
        loss, grad = ours(s.to(backend), t.to(backend), y_all.to(backend), reduction=reduction, temperature=2.0)
        assert not loss.isnan().any() and bool((loss == 0).all()) and bool((grad == 0).all())


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_teacher_log_probs_and_masked_vocabulary(backend, gen, divergence):
    s, t = logits((5, 250), gen), logits((5, 250), gen)
    t[:, 17:40] = -math.inf  # teacher gives these classes probability 0
    y = targets((5, 250), 250, gen)
    kw = dict(temperature=2.0, alpha=0.6, divergence=divergence)
    want = oracle(s, t, y, **kw)
    got = ours(s.to(backend), t.to(backend), y.to(backend), **kw)
    lp = F.log_softmax(t.double() / 2.0, -1).float()
    got_lp = ours(s.to(backend), lp.to(backend), y.to(backend), teacher_log_probs=True, **kw)
    if divergence == "reverse_kl":  # KL(p_s || p_t) is infinite where the teacher has zero mass
        assert math.isinf(float(got[0])) and math.isinf(float(got_lp[0]))
        return
    assert_close(got[0].cpu(), got[1].cpu(), *want)
    assert_close(got_lp[0].cpu(), got_lp[1].cpu(), *want)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_half_precision_inputs(backend, gen, dtype, divergence):
    """Half inputs are exact in fp32 and accumulated in fp32, so the loss keeps 1e-5; the gradient, returned in the
    input dtype, is within one rounding of it (2^-8 relative for bf16, 2^-11 for fp16, of its largest entry)."""
    skip_unless_served(dtype)
    shape = (3, 5, 1031)
    s, t = logits(shape, gen, dtype), logits(shape, gen, dtype)
    y = targets(shape, shape[-1], gen)
    kw = dict(temperature=2.0, alpha=0.5, divergence=divergence)
    loss, grad = ours(s.to(backend), t.to(backend), y.to(backend), **kw)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert_close(loss.cpu(), grad.cpu(), *oracle(s, t, y, **kw), grad_rtol=2.0 ** (-7 if dtype == torch.bfloat16
                                                                                   else -10))
    # a teacher in another dtype than the student
    skip_unless_served(torch.float32)
    loss2, grad2 = ours(s.float().to(backend), t.to(backend), y.to(backend), **kw)
    assert_close(loss2.cpu(), grad2.cpu(), *oracle(s.float(), t, y, **kw))


def test_non_contiguous_and_no_grad(backend, gen):
    base_s, base_t = logits((300, 8), gen), logits((300, 8), gen)
    s, t = base_s.t(), base_t.t()  # (8, 300) views with stride 1 along the batch
    y = targets((8, 300), 300, gen)
    want = oracle(s, t, y, temperature=1.5)
    got = ours(s.to(backend), t.to(backend), y.to(backend), temperature=1.5)
    assert_close(got[0].cpu(), got[1].cpu(), *want)
    with torch.no_grad():
        loss = fd.kd_loss(s.to(backend).requires_grad_(), t.to(backend), y.to(backend), temperature=1.5)
    assert abs(float(loss) - float(want[0])) <= 1e-5 * abs(float(want[0]))


def test_numpy_in_numpy_out(gen):
    s, t = logits((4, 50), gen), logits((4, 50), gen)
    y = targets((4, 50), 50, gen, p_ignore=0.0)
    got = fd.kd_loss(s.numpy(), t.numpy(), y.numpy(), temperature=2.0)
    assert isinstance(got, np.float32)
    assert abs(float(got) - float(oracle(s, t, y, temperature=2.0)[0])) <= 1e-5 * abs(float(got))
    rows = fd.kd_loss(s.numpy(), t.numpy(), None, reduction="none")
    assert isinstance(rows, np.ndarray) and rows.shape == (4,)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_gradcheck_float64(backend, gen, divergence):
    skip_unless_served(torch.float64)
    s = logits((2, 2, 5), gen, torch.float64).div(5).to(backend).requires_grad_()
    t = logits((2, 2, 5), gen, torch.float64).div(5).to(backend)
    y = torch.tensor([[1, -100], [4, 0]], device=backend)
    for reduction in ("sum", "none"):
        fn = lambda x: fd.kd_loss(x, t, y, temperature=2.0, alpha=0.4, divergence=divergence,  # noqa: E731
                                  reduction=reduction)
        assert torch.autograd.gradcheck(fn, (s,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_opcheck(backend, gen, reduction):
    dtype = torch.float64 if fd.get_backend() in ("python", "numba") else torch.float32
    s = logits((4, 3, 33), gen, dtype).to(backend).requires_grad_()
    t = logits((4, 3, 33), gen, dtype).to(backend)
    y = targets((4, 3, 33), 33, gen).to(backend)
    for divergence, target in (("kl", y), ("jsd", None)):
        args = (s, t, target, 2.0, 0.5, divergence, 0.5, -100, reduction, False, "none", True)
        torch.library.opcheck(_ops.kd_loss, args)


def test_bad_inputs():
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.randint(0, 10, (4,))
    cases = [
        (ValueError, "teacher_logits", dict(t=torch.randn(4, 11))),
        (ValueError, "student_logits", dict(s=torch.randn(10), t=torch.randn(10))),
        (ValueError, "target", dict(y=torch.randint(0, 10, (5,)))),
        (ValueError, "target", dict(y=torch.tensor([0, 1, 10, 2]))),
        (ValueError, "target", dict(y=torch.tensor([0, -1, 3, 2]))),
        (TypeError, "target", dict(y=torch.zeros(4))),
        (ValueError, "temperature", dict(temperature=0.0)),
        (ValueError, "temperature", dict(temperature=-1.0)),
        (ValueError, "temperature", dict(temperature=float("nan"))),
        (ValueError, "alpha", dict(alpha=1.5)),
        (ValueError, "alpha", dict(alpha=-0.1)),
        (ValueError, "alpha", dict(alpha=0.0, y=None)),
        (ValueError, "beta", dict(divergence="jsd", beta=1.0)),
        (ValueError, "divergence", dict(divergence="kld")),
        (ValueError, "reduction", dict(reduction="avg")),
        (TypeError, "student_logits", dict(s=torch.randint(0, 3, (4, 10)))),
        (TypeError, "ignore_index", dict(ignore_index=1.5)),
    ]
    for exc, name, kw in cases:
        args = dict(s=s, t=t, y=y)
        args.update({k: kw.pop(k) for k in ("s", "t", "y") if k in kw})
        with pytest.raises(exc, match=name):
            fd.kd_loss(args["s"], args["t"], args["y"], **kw)


def test_native_checks_arguments_itself():
    from fastdistill._dispatch import backend_unavailable_reason

    if backend_unavailable_reason("native") is not None:
        pytest.skip("native backend unavailable")
    from fastdistill import _C

    s = np.zeros((2, 5), np.float32)
    out = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="target"):
        _C.kd_loss(s, s, np.array([0, 5]), 1.0, 0.5, 0, 0.5, -100, 1.0, False, None, out)
    with pytest.raises(ValueError, match="teacher"):
        _C.kd_loss(s, np.zeros((2, 4), np.float32), None, 1.0, 0.5, 0, 0.5, -100, 1.0, False, None, out)
    with pytest.raises(TypeError, match="grad"):
        _C.kd_loss(s, s, None, 1.0, 0.5, 0, 0.5, -100, 1.0, False, np.zeros((2, 5), np.float64), out)


def test_backward_twice_through_a_retained_graph(backend, gen):
    """The forward's gradient buffer goes to the first backward; a second one recomputes it."""
    s = logits((5, 3, 70), gen).to(backend).requires_grad_()
    t, y = logits((5, 3, 70), gen).to(backend), targets((5, 3, 70), 70, gen).to(backend)
    for reduction in ("batchmean", "none"):
        loss = fd.kd_loss(s, t, y, temperature=2.0, reduction=reduction)
        w = torch.ones_like(loss) * 0.5
        (g1,) = torch.autograd.grad(loss, s, w, retain_graph=True)
        (g2,) = torch.autograd.grad(loss, s, w)
        assert torch.equal(g1, g2)


def test_torch_compile_fullgraph(gen):
    s, t = logits((5, 37), gen), logits((5, 37), gen)
    y = targets((5, 37), 37, gen)
    fn = torch.compile(lambda s, t, y: fd.kd_loss(s, t, y, temperature=2.0, reduction="mean"), fullgraph=True,
                       backend="eager")
    got = ours(s, t, y, temperature=2.0, reduction="mean")
    leaf = s.clone().requires_grad_()
    loss = fn(leaf, t, y)
    loss.backward()
    torch.testing.assert_close(loss.detach(), got[0], rtol=0, atol=0)
    torch.testing.assert_close(leaf.grad, got[1], rtol=0, atol=0)


def test_op_rejects_out_of_range_targets_on_every_backend(backend, gen):
    # The public function's value checks are skipped under torch.compile: each kernel must then refuse by itself.
    dtype = torch.float64 if fd.get_backend() in ("python", "numba") else torch.float32
    s, t = logits((4, 10), gen, dtype).to(backend), logits((4, 10), gen, dtype).to(backend)
    for bad in (10, -3):
        y = torch.tensor([1, bad, 2, -100], device=backend)
        with pytest.raises((ValueError, RuntimeError), match="target|index|out of"):
            _ops.kd_loss(s, t, y, 2.0, 0.5, "kl", 0.5, -100, "sum", False, "none", True)
