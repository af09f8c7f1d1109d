"""fused_linear_kd_loss and the nn loss modules: against kd_loss on the full logits (float64: to rounding; fp32 and
bf16 against a float64 autograd oracle with stated tolerances), every reduction and divergence, chunk sizes that
split rows unevenly, (B, T, d) inputs, ignored rows, grad_output scaling, retained graphs, errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastdistill as fd
from fastdistill.fused_linear_kd import default_chunk_size

DIVERGENCES = ["kl", "reverse_kl", "jsd"]
REDUCTIONS = ["batchmean", "mean", "sum", "none"]


def make(gen, lead=(23,), V=301, ds=24, dt=40, dtype=torch.float64, bias=True, p_ignore=0.2):
    def r(*shape, scale=1.0):
        return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    hs = r(*lead, ds).requires_grad_()
    ws = r(V, ds, scale=ds ** -0.5 * 4).requires_grad_()  # logits of scale ~4
    bs = r(V).requires_grad_() if bias else None
    ht, wt = r(*lead, dt), r(V, dt, scale=dt ** -0.5 * 4)
    bt = r(V) if bias else None
    y = torch.randint(0, V, lead, generator=gen)
    y = torch.where(torch.rand(lead, generator=gen) < p_ignore, torch.full_like(y, -100), y)
    return hs, ws, bs, ht, wt, bt, y


def leaves(hs, ws, bs):
    return [x for x in (hs, ws, bs) if x is not None]


def reference(hs, ws, bs, ht, wt, bt, y, grad_output=None, **kw):
    """kd_loss on the full float64 logits, gradients by autograd through F.linear."""
    xs = [x.detach().double().requires_grad_() if x is not None else None for x in (hs, ws, bs)]
    t = F.linear(ht.double(), wt.double(), None if bt is None else bt.double())
    with fd.use_backend("python"):  # the float64 reference, whichever backend the test forces
        loss = fd.kd_loss(F.linear(xs[0], xs[1], xs[2]), t, y, **kw)
    w = torch.ones_like(loss) if grad_output is None else grad_output.double()
    return loss.detach(), torch.autograd.grad((loss * w).sum(), leaves(*xs))


def fused(hs, ws, bs, ht, wt, bt, y, grad_output=None, **kw):
    loss = fd.fused_linear_kd_loss(hs, ws, ht, wt, y, student_bias=bs, teacher_bias=bt, **kw)
    w = torch.ones_like(loss) if grad_output is None else grad_output.to(loss.dtype)
    return loss.detach(), torch.autograd.grad((loss * w).sum(), leaves(hs, ws, bs))


def assert_close(got, want, rtol):
    (gl, gg), (wl, wg) = got, want
    assert torch.allclose(gl.double(), wl, rtol=rtol, atol=rtol * float(wl.abs().max().clamp_min(1e-3))), (gl, wl)
    for a, b in zip(gg, wg):
        err = float((a.double() - b).abs().max())
        assert err <= rtol * float(b.abs().max().clamp_min(1e-12)), (err, float(b.abs().max()))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("chunk_size", [1, 7, 23, 1000, None])
def test_float64_equals_kd_loss_on_full_logits(gen, reduction, divergence, chunk_size):
    args = make(gen)
    kw = dict(temperature=2.0, alpha=0.3, divergence=divergence, reduction=reduction)
    go = torch.rand(23, generator=gen, dtype=torch.float64) if reduction == "none" else None
    assert_close(fused(*args, go, chunk_size=chunk_size, **kw), reference(*args, go, **kw), 1e-10)


@pytest.mark.parametrize("reduction", ["batchmean", "mean", "none"])
def test_three_d_inputs_without_target_or_bias(backend, gen, reduction):
    hs, ws, bs, ht, wt, bt, _ = make(gen, lead=(3, 5), V=129, dtype=torch.float32, bias=False)
    kw = dict(temperature=3.0, alpha=0.7, reduction=reduction)
    got = fused(hs, ws, bs, ht, wt, bt, None, chunk_size=4, **kw)
    assert got[0].shape == ((3, 5) if reduction == "none" else ())
    assert_close(got, reference(hs, ws, bs, ht, wt, bt, None, **kw), 2e-5)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_float32_backends_against_float64(backend, gen, divergence):
    args = make(gen, lead=(37,), V=1031, dtype=torch.float32)
    kw = dict(temperature=2.0, alpha=0.5, divergence=divergence)
    assert_close(fused(*args, chunk_size=16, **kw), reference(*args, **kw), 2e-5)


def test_bfloat16(gen):
    args = make(gen, lead=(19,), V=257, dtype=torch.bfloat16)
    kw = dict(temperature=2.0)
    # bf16 logits carry 2^-9 relative rounding (of logits ~4 in size): a few percent of the gradient's scale
    assert_close(fused(*args, chunk_size=8, **kw), reference(*args, **kw), 5e-2)
    assert all(g.dtype == torch.bfloat16 for g in fused(*args, chunk_size=8, **kw)[1])


def test_grad_output_scaling_retain_graph_and_frozen_teacher(gen):
    hs, ws, bs, ht, wt, bt, y = make(gen)
    wt.requires_grad_()
    loss = fd.fused_linear_kd_loss(hs, ws, ht, wt, y, student_bias=bs, teacher_bias=bt, chunk_size=5)
    first = torch.autograd.grad(loss * 3.0, [hs, ws, bs], retain_graph=True)
    second = torch.autograd.grad(loss * 3.0, [hs, ws, bs])  # recomputed: the forward's gradients were handed over
    want = reference(hs, ws, bs, ht, wt, bt, y)[1]
    for a, b, c in zip(first, second, want):
        torch.testing.assert_close(a, 3.0 * c, rtol=1e-10, atol=0)
        torch.testing.assert_close(b, 3.0 * c, rtol=1e-10, atol=0)
    assert loss.requires_grad and wt.grad is None


def test_only_requested_gradients_and_no_grad(gen):
    hs, ws, bs, ht, wt, bt, y = make(gen)
    hs.requires_grad_(False)
    loss = fd.fused_linear_kd_loss(hs, ws, ht, wt, y, student_bias=bs, teacher_bias=bt, chunk_size=4)
    loss.backward()
    assert hs.grad is None and ws.grad is not None and bs.grad is not None
    with torch.no_grad():
        again = fd.fused_linear_kd_loss(hs, ws, ht, wt, y, student_bias=bs, teacher_bias=bt)
    assert not again.requires_grad and float(again) == pytest.approx(float(loss.detach()), rel=1e-12)


def test_empty_and_all_ignored_rows(gen):
    hs, ws, bs, ht, wt, bt, y = make(gen, lead=(0,))
    loss = fd.fused_linear_kd_loss(hs, ws, ht, wt, y, student_bias=bs, reduction="mean")
    loss.backward()
    assert float(loss) == 0.0 and ws.grad.abs().sum() == 0 and hs.grad.shape == (0, 24)
    hs, ws, bs, ht, wt, bt, y = make(gen, lead=(4,))
    loss = fd.fused_linear_kd_loss(hs, ws, ht, wt, torch.full((4,), -100), reduction="mean")
    loss.backward()
    assert float(loss) == 0.0 and float(ws.grad.abs().sum()) == 0.0


def test_modules_match_functions(gen):
    hs, ws, bs, ht, wt, bt, y = make(gen, dtype=torch.float32)
    kw = dict(temperature=2.0, alpha=0.4, divergence="jsd", beta=0.3, reduction="sum")
    crit = fd.nn.FusedLinearKDLoss(chunk_size=8, **kw)
    assert "divergence='jsd'" in repr(crit)
    got = crit(hs, ws, ht, wt, y, student_bias=bs, teacher_bias=bt)
    want = fd.fused_linear_kd_loss(hs, ws, ht, wt, y, student_bias=bs, teacher_bias=bt, chunk_size=8, **kw)
    assert torch.equal(got, want)
    s, t = F.linear(hs, ws, bs), F.linear(ht, wt, bt)
    assert torch.equal(fd.nn.KDLoss(**kw)(s, t, y), fd.kd_loss(s, t, y, **kw))
    with pytest.raises(ValueError, match="temperature"):
        fd.nn.KDLoss(temperature=0.0)
    with pytest.raises(ValueError, match="divergence"):
        fd.nn.FusedLinearKDLoss(divergence="l2")


def test_default_chunk_size():
    assert default_chunk_size(32000) == 128
    assert default_chunk_size(128256) == 32
    assert default_chunk_size(10**8) == 16
    assert default_chunk_size(1) == 1 << 22


def test_bad_inputs(gen):
    hs, ws, bs, ht, wt, bt, y = make(gen, dtype=torch.float32)
    call = fd.fused_linear_kd_loss
    with pytest.raises(TypeError, match="student_hidden"):
        call(hs.detach().numpy(), ws, ht, wt)
    with pytest.raises(ValueError, match="student_weight"):
        call(hs, ws[:, :5], ht, wt)
    with pytest.raises(ValueError, match="teacher_weight"):
        call(hs, ws, ht, wt[:10])
    with pytest.raises(ValueError, match="teacher_hidden"):
        call(hs, ws, ht[:3], wt)
    with pytest.raises(ValueError, match="student_bias"):
        call(hs, ws, ht, wt, student_bias=bs[:4])
    with pytest.raises(TypeError, match="teacher_weight"):
        call(hs, ws, ht, wt.double())
    with pytest.raises(TypeError, match="student_hidden"):
        call(hs.long(), ws, ht, wt)
    with pytest.raises(ValueError, match="chunk_size"):
        call(hs, ws, ht, wt, chunk_size=0)
    with pytest.raises(ValueError, match="target"):
        call(hs, ws, ht, wt, torch.full((23,), 10**6))
    with pytest.raises(ValueError, match="alpha"):
        call(hs, ws, ht, wt, None, alpha=0.0)
    with pytest.raises(ValueError, match="reduction"):
        call(hs, ws, ht, wt, reduction="avg")
