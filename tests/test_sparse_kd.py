"""sparse_kd_loss: every backend against an independent float64 autograd oracle built on the dense vocabulary
(loss and gradient within 1e-5 relative for fp32 logits of scale 1 to 30), every values/tail combination and
importance sampling (exact formula, and unbiasedness by simulation), padding, fp16/bf16, gradcheck, opcheck,
errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastdistill as fd
from fastdistill import _ops
from test_kd import REDUCTIONS, assert_close, logits, natural_scale, ours, skip_unless_served, targets, \
    with_ce_reduced

KINDS = [("logits", "none"), ("log_probs", "none"), ("probs", "none"), ("log_probs", "bucket"),
         ("probs", "bucket")]
# (B, V, K) and (B, T, V, K): K = V (every class), K = 1, a K past the kernel's 512-element chunk, many chunks
SHAPES = [(1, 1, 1), (7, 13, 13), (5, 129, 7), (3, 4, 1000, 64), (2, 3, 513, 1), (2, 40001, 600)]


@pytest.fixture
def backend(backend):
    """conftest's backend, skipped where that backend has no sparse_kd_loss kernel."""
    if fd.get_backend() not in fd.info()["ops"].get("sparse_kd_loss", ()):
        pytest.skip(f"no {fd.get_backend()} kernel for sparse_kd_loss")
    return backend


def oracle(s, idx, val, y, *, values="logits", tail="none", sampling_probs=None, temperature=1.0, alpha=0.5,
           ignore_index=-100, reduction="batchmean", grad_output=None):
    """Float64 loss and gradient by autograd, from the dense vocabulary: the teacher's probabilities scattered to a
    (..., V) tensor, the student's tail bin as a masked sum."""
    s64 = s.detach().double().requires_grad_()
    T, K = temperature, idx.shape[-1]
    ls = F.log_softmax(s64 / T, -1)
    i, v = idx.long(), val.double()
    lp = F.log_softmax(v / T, -1) if values == "logits" else v if values == "log_probs" else v.log()
    p = lp.exp()
    lq = ls.gather(-1, i)

    def plogr(a, log_a, log_b):  # a (log_a - log_b), 0 where a == 0
        return torch.where(a > 0, a * (log_a - torch.where(a > 0, log_b, 0.0)), 0.0)

    if sampling_probs is not None:
        w = p / (K * sampling_probs.double())
        d = plogr(w, lp, lq).sum(-1)
    elif tail == "none":
        dense = torch.zeros_like(ls).scatter_add(-1, i, p)
        dense = dense / dense.sum(-1, keepdim=True)
        d = plogr(dense, dense.log(), ls).sum(-1)
    else:
        in_k = torch.zeros_like(ls).scatter_add(-1, i, (p > 0).double()) > 0
        q_b = torch.where(in_k, 0.0, ls.exp()).sum(-1)
        p_b = torch.where(in_k.all(-1), 0.0, (1 - p.sum(-1)).clamp(min=0))
        d = plogr(p, lp, lq).sum(-1) + plogr(p_b, p_b.log(), q_b.log())
    return with_ce_reduced(s64, alpha * T * T * d, y, alpha=alpha, ignore_index=ignore_index, reduction=reduction,
                           grad_output=grad_output)


def sparse_ours(s, idx, val, y, grad_output=None, **kw):
    return ours(s, None, y, grad_output, lambda x, _, y, **k: fd.sparse_kd_loss(x, idx, val, y, **k), **kw)


def teacher_entries(shape, K, gen, values, temperature=1.0):
    """The top-K entries of a random teacher (logits of scale 1 to 30), in a shuffled order, as ``values``."""
    t = logits(shape[:-1] + (shape[-1],), gen).double()
    top = F.log_softmax(t / temperature, -1).topk(K, -1)
    order = torch.rand(top.indices.shape, generator=gen).argsort(-1)
    idx, lp = top.indices.gather(-1, order), top.values.gather(-1, order)
    val = {"logits": t.gather(-1, idx), "log_probs": lp, "probs": lp.exp()}[values]
    return idx, val.float()


@pytest.mark.parametrize("values,tail", KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64_oracle(backend, gen, values, tail, shape):
    shape, K = shape[:-1], shape[-1]
    s = logits(shape, gen)
    y = targets(shape, shape[-1], gen)
    # T = 2 has its own native path (softmax at T = 1 as the square of the one at T = 2)
    for temperature, alpha, reduction in [(1.0, 0.5, r) for r in REDUCTIONS] + [(2.5, 0.3, "batchmean"),
                                                                              (0.7, 1.0, "mean"), (2.0, 0.4, "sum")]:
        idx, val = teacher_entries(shape, K, gen, values, temperature)
        kw = dict(values=values, tail=tail, temperature=temperature, alpha=alpha, reduction=reduction)
        got = sparse_ours(s.to(backend), idx.to(backend), val.to(backend), y.to(backend), **kw)
        assert_close(got[0].cpu(), got[1].cpu(), *oracle(s, idx, val, y, **kw), scale=natural_scale(shape, y, kw))


@pytest.mark.parametrize("values,tail", KINDS)
def test_without_target_and_with_grad_output(backend, gen, values, tail):
    shape = (6, 2, 77)
    s = logits(shape, gen)
    idx, val = teacher_entries(shape, 9, gen, values, 2.0)
    for reduction in REDUCTIONS:
        w = torch.rand(shape[:-1] if reduction == "none" else (), generator=gen, dtype=torch.float64) + 0.5
        kw = dict(values=values, tail=tail, temperature=2.0, alpha=0.8, reduction=reduction)
        got = sparse_ours(s.to(backend), idx.to(backend), val.to(backend), None, grad_output=w.to(backend), **kw)
        assert_close(got[0].cpu(), got[1].cpu(), *oracle(s, idx, val, None, grad_output=w, **kw),
                     scale=natural_scale(shape, None, kw, w))


@pytest.mark.parametrize("values,tail", KINDS)
def test_padding_entries_and_int32_indices(backend, gen, values, tail):
    """Zero-probability entries are padding (repeated indices among them are fine); a row of padding only has no
    distillation term."""
    shape, K = (6, 300), 12
    s = logits(shape, gen)
    idx, val = teacher_entries(shape, K, gen, values)
    pad = {"logits": -math.inf, "log_probs": -math.inf, "probs": 0.0}[values]
    idx[:, 8:], val[:, 8:] = 3, pad  # index 3 may also be a live entry of the row
    idx[2], val[2] = 5, pad
    y = targets(shape, shape[-1], gen, p_ignore=0.0)
    kw = dict(values=values, tail=tail, temperature=1.5)
    want = oracle(s, idx, val, y, **kw)
    got = sparse_ours(s.to(backend), idx.int().to(backend), val.to(backend), y.to(backend), **kw)
    assert_close(got[0].cpu(), got[1].cpu(), *want)
    rows = fd.sparse_kd_loss(s[2:3].to(backend), idx[2:3].to(backend), val[2:3].to(backend), None, values=values,
                             tail=tail, alpha=1.0, reduction="none")
    assert abs(float(rows[0])) <= 1e-6


def test_bucket_matches_the_full_kl_when_entries_hold_all_mass(backend, gen):
    """With the teacher's whole support among the entries, every variant is the dense KL of kd_loss."""
    shape = (5, 200)
    s, t = logits(shape, gen), logits(shape, gen)
    t[:, 20:] = -math.inf
    lp = F.log_softmax(t.double(), -1)
    idx = torch.arange(20).expand(5, 20)
    with fd.use_backend("python"):
        want = fd.kd_loss(s.double(), lp, None, alpha=1.0, teacher_log_probs=True)
    for values, tail in KINDS:
        val = {"logits": t[:, :20], "log_probs": lp[:, :20], "probs": lp[:, :20].exp()}[values].float()
        got = fd.sparse_kd_loss(s.to(backend), idx.to(backend), val.to(backend), values=values, tail=tail,
                                alpha=1.0)
        assert abs(float(got) - float(want)) <= 1e-5 * abs(float(want)) + 1e-6, (values, tail)


@pytest.mark.parametrize("values", ["log_probs", "probs"])
def test_importance_sampling_exact(backend, gen, values):
    shape, K = (4, 3, 301), 40
    s, t = logits(shape, gen), logits(shape, gen)
    lp = F.log_softmax(t.double() / 2.0, -1)
    r = (0.5 * lp.exp() + 0.5 / shape[-1])  # proposal: half teacher, half uniform
    idx = torch.multinomial(r.reshape(-1, shape[-1]), K, replacement=True, generator=gen).reshape(shape[:-1] + (K,))
    val = lp.gather(-1, idx)
    val = (val if values == "log_probs" else val.exp()).float()
    sp = r.gather(-1, idx).float()
    y = targets(shape, shape[-1], gen)
    for reduction in REDUCTIONS:
        kw = dict(values=values, sampling_probs=sp, temperature=2.0, alpha=0.7, reduction=reduction)
        got = sparse_ours(s.to(backend), idx.to(backend), val.to(backend), y.to(backend),
                          **dict(kw, sampling_probs=sp.to(backend)))
        assert_close(got[0].cpu(), got[1].cpu(), *oracle(s, idx, val, y, **kw), scale=natural_scale(shape, y, kw))


@pytest.mark.parametrize("proposal", ["teacher", "mixture"])
def test_importance_sampling_is_unbiased(backend, gen, proposal):
    """Over many rows of draws, the mean loss and gradient match KL(p || q) and q - p within 5 standard errors; the
    same draws weighted as if they came from a uniform proposal miss by far more (the test can fail)."""
    V, K, N, T = 7, 3, 20000, 1.0
    s = (torch.randn(V, generator=gen, dtype=torch.float64) * 1.5).float()
    lp = F.log_softmax(torch.randn(V, generator=gen, dtype=torch.float64) * 1.5, -1)
    p, q = lp.exp(), F.softmax(s.double(), -1)
    r = p if proposal == "teacher" else 0.3 * p + 0.7 / V
    idx = torch.multinomial(r.float(), N * K, replacement=True, generator=gen).reshape(N, K)
    sn = s.expand(N, V)
    kl = float((p * (lp - q.log())).sum())

    def mean_and_err(rows, grad):
        m, se = rows.double().mean(), rows.double().std() / math.sqrt(N)
        gm, gse = grad.double().mean(0), grad.double().std(0) / math.sqrt(N)
        return float((m - kl).abs() / se), float(((gm - (q - p)).abs() / gse).max())

    def run(sp):
        x = sn.clone().to(backend).requires_grad_()
        rows = fd.sparse_kd_loss(x, idx.to(backend), lp[idx].float().to(backend), values="log_probs",
                                 sampling_probs=sp.float().to(backend), alpha=1.0, temperature=T, reduction="none")
        rows.sum().backward()
        return mean_and_err(rows.detach().cpu(), x.grad.cpu())

    z_loss, z_grad = run(r[idx])
    assert z_loss < 5 and z_grad < 5, (z_loss, z_grad)
    z_loss, z_grad = run(torch.full((N, K), 1.0 / V))
    assert max(z_loss, z_grad) > 20, (z_loss, z_grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("values,tail", [("logits", "none"), ("probs", "bucket")])
def test_half_precision_inputs(backend, gen, dtype, values, tail):
    """Half logits are exact in fp32 and accumulated in fp32: the loss keeps 1e-5, the gradient (returned in the
    input dtype) is within one rounding of its largest entry. Half teacher values are accepted too."""
    skip_unless_served(dtype)
    shape = (3, 5, 1031)
    s = logits(shape, gen, dtype)
    idx, val = teacher_entries(shape, 50, gen, values, 2.0)
    y = targets(shape, shape[-1], gen)
    kw = dict(values=values, tail=tail, temperature=2.0)
    loss, grad = sparse_ours(s.to(backend), idx.to(backend), val.to(backend), y.to(backend), **kw)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert_close(loss.cpu(), grad.cpu(), *oracle(s, idx, val, y, **kw),
                 grad_rtol=2.0 ** (-7 if dtype == torch.bfloat16 else -10))
    val_h = val.to(dtype)
    got = sparse_ours(s.to(backend), idx.to(backend), val_h.to(backend), y.to(backend), **kw)
    assert_close(got[0].cpu(), got[1].cpu(), *oracle(s, idx, val_h, y, **kw),
                 grad_rtol=2.0 ** (-7 if dtype == torch.bfloat16 else -10))


def test_non_contiguous_and_no_grad(backend, gen):
    s = logits((300, 8), gen).t()  # (8, 300) views with stride 1 along the batch
    idx, val = teacher_entries((8, 300), 16, gen, "log_probs", 1.5)
    idx, val = idx.t().contiguous().t(), val.t().contiguous().t()
    y = targets((8, 300), 300, gen)
    kw = dict(values="log_probs", tail="bucket", temperature=1.5)
    want = oracle(s, idx, val, y, **kw)
    got = sparse_ours(s.to(backend), idx.to(backend), val.to(backend), y.to(backend), **kw)
    assert_close(got[0].cpu(), got[1].cpu(), *want)
    with torch.no_grad():
        loss = fd.sparse_kd_loss(s.to(backend).requires_grad_(), idx.to(backend), val.to(backend), y.to(backend),
                                 **kw)
    assert abs(float(loss) - float(want[0])) <= 1e-5 * abs(float(want[0]))


def test_numpy_in_numpy_out(gen):
    s = logits((4, 50), gen)
    idx, val = teacher_entries((4, 50), 5, gen, "logits", 2.0)
    y = targets((4, 50), 50, gen, p_ignore=0.0)
    got = fd.sparse_kd_loss(s.numpy(), idx.numpy(), val.numpy(), y.numpy(), temperature=2.0)
    assert isinstance(got, np.float32)
    want = oracle(s, idx, val, y, temperature=2.0)[0]
    assert abs(float(got) - float(want)) <= 1e-5 * abs(float(want))
    rows = fd.sparse_kd_loss(s.numpy(), idx.numpy(), val.numpy(), reduction="none")
    assert isinstance(rows, np.ndarray) and rows.shape == (4,)


@pytest.mark.parametrize("values,tail", KINDS + [("probs", "sampled")])
def test_gradcheck_float64(backend, gen, values, tail):
    skip_unless_served(torch.float64)
    s = logits((2, 2, 9), gen, torch.float64).div(5).to(backend).requires_grad_()
    idx, val = teacher_entries((2, 2, 9), 4, gen, values, 2.0)
    kw = dict(values=values, tail=tail)
    if tail == "sampled":
        kw = dict(values=values, sampling_probs=torch.rand(idx.shape, generator=gen).add(0.1).div(1.1))
        idx[..., 1] = idx[..., 0]
    y = torch.tensor([[1, -100], [4, 0]], device=backend)
    for reduction in ("sum", "none"):
        fn = lambda x: fd.sparse_kd_loss(x, idx, val.double(), y, temperature=2.0, alpha=0.4,  # noqa: E731
                                         reduction=reduction, **kw)
        assert torch.autograd.gradcheck(fn, (s,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_opcheck(backend, gen, reduction):
    dtype = torch.float64 if fd.get_backend() in ("python", "numba") else torch.float32
    s = logits((4, 3, 33), gen, dtype).to(backend).requires_grad_()
    y = targets((4, 3, 33), 33, gen).to(backend)
    idx, val = teacher_entries((4, 3, 33), 5, gen, "probs", 2.0)
    sp = torch.rand(idx.shape, generator=gen).add(0.1).div(1.1)
    for values, tail, sampling, target in (("logits", "none", None, y), ("probs", "bucket", None, None),
                                           ("probs", "none", sp, y)):
        args = (s, idx.to(backend), val.to(backend), None if sampling is None else sampling.to(backend), target, 2.0,
                0.5, values, tail, -100, reduction, True)
        torch.library.opcheck(_ops.sparse_kd_loss, args)


def test_bad_inputs():
    s, y = torch.randn(4, 10), torch.randint(0, 10, (4,))
    idx = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]])
    lp = torch.full((4, 2), math.log(0.3))
    cases = [
        (ValueError, "teacher_indices", dict(idx=idx[:, None])),
        (ValueError, "teacher_indices", dict(idx=idx[:3])),
        (ValueError, "teacher_indices", dict(idx=idx[:, :0], val=lp[:, :0])),
        (ValueError, "teacher_indices", dict(idx=idx + 3)),
        (ValueError, "teacher_indices", dict(idx=idx - 1)),
        (ValueError, "teacher_indices", dict(idx=torch.tensor([[0, 1], [2, 2], [4, 5], [6, 7]]))),
        (TypeError, "teacher_indices", dict(idx=idx.float())),
        (TypeError, "teacher_indices", dict(idx=idx.short())),
        (ValueError, "teacher_values", dict(val=lp[:, :1])),
        (TypeError, "teacher_values", dict(val=lp.long())),
        (ValueError, "teacher_values", dict(val=torch.full((4, 2), math.nan))),
        (ValueError, "teacher_values", dict(val=torch.full((4, 2), math.log(0.6)))),  # sums to 1.2
        (ValueError, "teacher_values", dict(val=torch.full((4, 2), 0.1), values="log_probs")),  # p > 1
        (ValueError, "teacher_values", dict(val=torch.full((4, 2), -0.1), values="probs")),
        (ValueError, "teacher_values", dict(val=torch.full((4, 2), math.inf), values="logits")),
        (ValueError, "tail", dict(values="logits", tail="bucket")),
        (ValueError, "tail", dict(tail="topk")),
        (ValueError, "values", dict(values="probabilities")),
        (ValueError, "sampling_probs", dict(sampling_probs=torch.full((4, 2), 0.5), tail="bucket")),
        (ValueError, "sampling_probs", dict(sampling_probs=torch.full((4, 2), 0.5), values="logits")),
        (ValueError, "sampling_probs", dict(sampling_probs=torch.full((4, 2), 0.0))),
        (ValueError, "sampling_probs", dict(sampling_probs=torch.full((4, 3), 0.5))),
        (ValueError, "temperature", dict(temperature=0.0)),
        (ValueError, "alpha", dict(alpha=1.5)),
        (ValueError, "alpha", dict(alpha=0.0, y=None)),
        (ValueError, "reduction", dict(reduction="avg")),
        (ValueError, "target", dict(y=torch.tensor([0, 1, 10, 2]))),
        (TypeError, "ignore_index", dict(ignore_index=1.5)),
        (TypeError, "student_logits", dict(s=torch.randint(0, 3, (4, 10)))),
    ]
    for exc, name, kw in cases:
        args = dict(s=s, idx=idx, val=lp, y=y, values="log_probs")
        args.update({k: kw.pop(k) for k in ("s", "idx", "val", "y", "values") if k in kw})
        with pytest.raises(exc, match=name):
            fd.sparse_kd_loss(args["s"], args["idx"], args["val"], args["y"], values=args["values"], **kw)
    # duplicates are fine with sampling_probs
    fd.sparse_kd_loss(s, torch.zeros(4, 2, dtype=torch.int64), lp, y, values="log_probs",
                      sampling_probs=torch.full((4, 2), 0.5))


def test_backward_twice_through_a_retained_graph(backend, gen):
    s = logits((5, 3, 70), gen).to(backend).requires_grad_()
    idx, val = teacher_entries((5, 3, 70), 6, gen, "probs", 2.0)
    y = targets((5, 3, 70), 70, gen).to(backend)
    for reduction in ("batchmean", "none"):
        loss = fd.sparse_kd_loss(s, idx.to(backend), val.to(backend), y, values="probs", tail="bucket",
                                 temperature=2.0, reduction=reduction)
        w = torch.ones_like(loss) * 0.5
        (g1,) = torch.autograd.grad(loss, s, w, retain_graph=True)
        (g2,) = torch.autograd.grad(loss, s, w)
        assert torch.equal(g1, g2)


def test_native_checks_arguments_itself():
    from fastdistill._dispatch import backend_unavailable_reason

    if backend_unavailable_reason("native") is not None:
        pytest.skip("native backend unavailable")
    from fastdistill import _C

    s = np.zeros((2, 5), np.float32)
    idx, val, out = np.zeros((2, 3), np.int64), np.zeros((2, 3), np.float32), np.zeros(2, np.float32)
    args = dict(sampling_probs=None, target=None, temperature=1.0, alpha=0.5, kind=0, bucket=False,
                ignore_index=-100, scale=1.0, grad=None, row_loss=out)
    with pytest.raises(ValueError, match="indices"):
        _C.sparse_kd_loss(s, np.array([[0, 1, 5], [0, 1, 2]]), val, **args)
    with pytest.raises(ValueError, match="indices"):
        _C.sparse_kd_loss(s, np.array([[0, 1, -1], [0, 1, 2]]), val, **args)
    with pytest.raises(TypeError, match="indices"):
        _C.sparse_kd_loss(s, idx.astype(np.int32), val, **args)
    with pytest.raises(ValueError, match="values"):
        _C.sparse_kd_loss(s, idx, val[:, :2], **args)
    with pytest.raises(ValueError, match="sampling_probs"):
        _C.sparse_kd_loss(s, idx, val, **dict(args, sampling_probs=np.ones((2, 2), np.float32)))
    with pytest.raises(ValueError, match="target"):
        _C.sparse_kd_loss(s, idx, val, **dict(args, target=np.array([0, 5])))
    with pytest.raises(TypeError, match="grad"):
        _C.sparse_kd_loss(s, idx, val, **dict(args, grad=np.zeros((2, 5), np.float64)))


def test_torch_compile_fullgraph(gen):
    s = logits((6, 50), gen)
    idx, val = teacher_entries((6, 50), 7, gen, "log_probs", 2.0)
    kw = dict(values="log_probs", tail="bucket", temperature=2.0)
    fn = torch.compile(lambda s, i, v: fd.sparse_kd_loss(s, i, v, **kw), fullgraph=True, backend="eager")
    leaf, ref = s.clone().requires_grad_(), s.clone().requires_grad_()
    loss = fn(leaf, idx, val)
    loss.backward()
    want = fd.sparse_kd_loss(ref, idx, val, **kw)
    want.backward()
    torch.testing.assert_close(loss.detach(), want.detach(), rtol=0, atol=0)
    torch.testing.assert_close(leaf.grad, ref.grad, rtol=0, atol=0)


def test_op_rejects_out_of_range_indices_on_every_backend(backend, gen):
    # The public function's value checks are skipped under torch.compile: each kernel must then refuse by itself.
    dtype = torch.float64 if fd.get_backend() in ("python", "numba") else torch.float32
    s = logits((3, 20), gen, dtype).to(backend)
    idx = torch.tensor([[0, 1], [2, 20], [4, 5]], device=backend)
    val = torch.full((3, 2), -1.0, dtype=dtype, device=backend)
    with pytest.raises((ValueError, RuntimeError), match="ind|out of"):
        _ops.sparse_kd_loss(s, idx, val, None, None, 2.0, 0.5, "log_probs", "none", -100, "sum", True)


def test_bucket_with_a_vanishing_student_tail(backend, gen):
    # The student puts all but ~1e-40 of its mass on the teacher's entries: p_b / q_b overflows fp32, so the native
    # kernel takes its unfolded path for the bucket's share.
    dtype = torch.float64 if fd.get_backend() in ("python", "numba") else torch.float32
    shape, K = (5, 300), 8
    idx, val = teacher_entries(shape, K, gen, "log_probs")
    s = torch.randn(shape, generator=gen, dtype=torch.float64)
    s.scatter_(-1, idx, 100.0)
    kw = dict(values="log_probs", tail="bucket", temperature=1.0, alpha=1.0, reduction="sum")
    got = sparse_ours(s.to(dtype).to(backend), idx.to(backend), val.to(backend), None, **kw)
    assert_close(got[0].cpu(), got[1].cpu(), *oracle(s, idx, val, None, **kw), scale=natural_scale(shape, None, kw))
