"""Pruning ops: every backend against the reference on awkward inputs, exact (masks are integer outputs)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.utils.prune as tprune

import fastdistill as fd
from fastdistill import _ops
from fastdistill.backends.python import prune as ref

SHAPES = [(0,), (1,), (7,), (3, 5), (33, 17), (1000,), (4, 1, 129), (70001,)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def ref_masks(xs, sparsity):
    k = fd._convert.prune_count(sparsity, sum(x.numel() for x in xs))
    with fd.use_backend("python"):
        return ref.select([x.cpu() for x in xs], k)[1]


def make(shape, dtype, gen, device, kind="normal"):
    x = torch.randn(shape, generator=gen)
    if kind == "ties":  # few distinct magnitudes, both signs: the tie-breaking rule decides most of the mask
        x = torch.randint(-3, 4, shape, generator=gen).float()
    elif kind == "scaled":
        x = x * torch.logspace(-30, 30, x.numel()).reshape(shape) if x.numel() else x
    return x.to(dtype).to(device)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["normal", "ties", "scaled"])
def test_magnitude_mask_matches_reference(backend, gen, shape, dtype, kind):
    x = make(shape, dtype, gen, backend, kind)
    for sparsity in (0.0, 0.3, 0.9, 1.0, min(3, x.numel())):
        got = fd.magnitude_mask(x, sparsity)
        want = ref_masks([x], sparsity)[0]
        assert got.dtype == torch.bool and got.shape == x.shape
        assert torch.equal(got.cpu(), want), (sparsity, got, want)
        assert int((~got).sum()) == fd._convert.prune_count(sparsity, x.numel())


def test_special_values(backend):
    x = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 1e-45, -1e-45, 3.4e38, 2.0, -2.0, 0.5], device=backend)
    for k in range(x.numel() + 1):
        assert torch.equal(fd.magnitude_mask(x, k).cpu(), ref_masks([x], k)[0])
    half = torch.tensor([6e-8, -6e-8, 1e-5, 65504.0, -float("inf"), 0.0, 3e-5, -1e-5], dtype=torch.float16)
    for k in range(half.numel() + 1):  # fp16 subnormals and the largest finite value
        assert torch.equal(fd.magnitude_mask(half.to(backend), k).cpu(), ref_masks([half], k)[0])


def test_threshold(backend, gen):
    x = make((1001,), torch.float32, gen, backend)
    thr = fd.magnitude_threshold(x, 0.9)
    assert thr.dtype == x.dtype and thr.dim() == 0
    assert float(thr) == float(torch.kthvalue(x.abs().cpu(), round(0.9 * 1001)).values)
    assert float(fd.magnitude_threshold(x, 0)) == float("-inf")
    assert float(fd.magnitude_threshold(x, 1.0)) == float(x.abs().max())


def test_prune_in_place(backend, gen):
    x = make((65, 129), torch.float32, gen, backend)
    orig = x.clone()
    mask = fd.prune_(x, 0.75)
    assert torch.equal(mask.cpu(), ref_masks([orig], 0.75)[0])
    assert torch.equal(x, orig * mask)
    # re-pruning an already pruned tensor (many zero ties) to a higher sparsity
    mask2 = fd.prune_(x, 0.9)
    assert torch.equal(mask2.cpu(), ref_masks([orig * mask], 0.9)[0])
    assert int((x == 0).sum()) >= round(0.9 * x.numel())


def test_non_contiguous(backend, gen):
    base = make((40, 30), torch.float32, gen, backend)
    for x in (base.t(), base[:, ::3], base[::2]):
        assert torch.equal(fd.magnitude_mask(x, 0.6).cpu(), ref_masks([x.contiguous()], 0.6)[0])
        y = x.clone().t().contiguous().t() if x.dim() == 2 else x.clone()  # a non-contiguous copy to prune in place
        want = ref_masks([y.contiguous()], 0.6)[0]
        mask = fd.prune_(y, 0.6)
        assert torch.equal(mask.cpu(), want) and torch.equal(y.cpu(), (x * want.to(x.device)).cpu())


def test_global_masks(backend, gen):
    xs = [make((31, 7), torch.float32, gen, backend), make((0, 4), torch.float32, gen, backend),
          make((300,), torch.float16, gen, backend), make((5, 5, 5), torch.bfloat16, gen, backend, "ties")]
    for sparsity in (0.0, 0.5, 0.93, 1.0, 17):
        got = fd.global_magnitude_masks(xs, sparsity)
        want = ref_masks(xs, sparsity)
        assert all(torch.equal(g.cpu(), w) for g, w in zip(got, want))


def test_large(backend, gen):
    x = make((3, 1 << 20), torch.float32, gen, backend)
    x[0, :1000] = 0  # zero runs take the compressed path of the histogram
    got = fd.magnitude_mask(x, 0.9)
    assert torch.equal(got.cpu(), ref_masks([x], 0.9)[0])


@pytest.mark.parametrize("case", ["sample_misses", "heavy_ties", "nan", "two_sources"])
def test_large_selection_paths(backend, gen, case):
    """Inputs of >= 2^20 elements take the sample-bracketed selection; these cases force each of its fallbacks."""
    n = (1 << 20) + 4099
    x = torch.randn(n, generator=gen) * 1e-3
    stride = n // 16384  # the native kernel samples every stride-th element: make the sample unrepresentative
    if case == "sample_misses":
        x[::stride] = 1e3 + torch.rand(x[::stride].shape, generator=gen)
    elif case == "heavy_ties":
        x = torch.randint(-2, 3, (n,), generator=gen).float()
    elif case == "nan":
        x[[5, n - 7]] = float("nan")
        with pytest.raises(ValueError, match="contains 2 NaN"):
            fd.magnitude_mask(x.to(backend), 0.5)
        return
    xs = [x.to(backend)] if case != "two_sources" else [x[:1000].to(backend), x.to(backend).half()]
    for sparsity in (0.01, 0.5, 0.97):
        got = fd.global_magnitude_masks(xs, sparsity)
        want = ref_masks(xs, sparsity)
        assert all(torch.equal(g.cpu(), w) for g, w in zip(got, want)), sparsity
    thr = fd.magnitude_threshold(xs[-1], 0.5)
    assert float(thr) == float(torch.kthvalue(xs[-1].float().abs().cpu(), round(0.5 * xs[-1].numel())).values)


@pytest.mark.parametrize("nm", [(2, 4), (1, 4), (4, 8), (0, 3), (3, 3), (5, 16)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nm_mask(backend, gen, nm, dtype):
    n, m = nm
    for shape, dim in (((6, 4 * m), -1), ((3 * m, 5), 0), ((2, m, 3), 1), ((0, m), 1), ((m,), 0)):
        x = make(shape, dtype, gen, backend, "ties" if dtype == torch.bfloat16 else "normal")
        got = fd.nm_mask(x, n, m, dim=dim)
        moved = x.movedim(dim, -1).contiguous().cpu()
        want = ref.nm_mask(moved, n, m).movedim(-1, dim)
        assert torch.equal(got.cpu(), want)
        assert (got.movedim(dim, -1).reshape(-1, m).sum(-1) == n).all()


def test_nm_mask_large_group_falls_back(gen):
    x = torch.randn(4, 128, generator=gen)
    with fd.use_backend("native"):
        if fd._dispatch.backend_unavailable_reason("native") is None:
            with pytest.raises(fd.BackendError, match="m=128 > 64"):
                fd.nm_mask(x, 64, 128)
    assert torch.equal(fd.nm_mask(x, 64, 128), ref.nm_mask(x, 64, 128))  # auto falls back to a backend that can


def test_matches_torch_prune(gen):
    """Tie-free weights: our masks equal torch.nn.utils.prune's l1_unstructured / global_unstructured."""
    lin = torch.nn.Linear(37, 29)
    other = torch.nn.Linear(29, 11)
    w1, w2 = lin.weight.detach().clone(), other.weight.detach().clone()
    tprune.l1_unstructured(lin, "weight", amount=0.7)
    assert torch.equal(fd.magnitude_mask(w1, 0.7), lin.weight_mask.bool())
    lin2, other2 = torch.nn.Linear(37, 29), torch.nn.Linear(29, 11)
    with torch.no_grad():
        lin2.weight.copy_(w1)
        other2.weight.copy_(w2)
    tprune.global_unstructured([(lin2, "weight"), (other2, "weight")], tprune.L1Unstructured, amount=0.8)
    ours = fd.global_magnitude_masks([w1, w2], 0.8)
    assert torch.equal(ours[0], lin2.weight_mask.bool()) and torch.equal(ours[1], other2.weight_mask.bool())


def test_channel_mask_matches_ln_structured(gen):
    conv = torch.nn.Conv2d(3, 12, 3)
    w = conv.weight.detach().clone()
    for p, dim, amount in ((1, 0, 0.5), (2, 1, 1), (float("inf"), 0, 4)):
        c = torch.nn.Conv2d(3, 12, 3)
        with torch.no_grad():
            c.weight.copy_(w)
        tprune.ln_structured(c, "weight", amount=amount, n=p, dim=dim)
        assert torch.equal(fd.channel_mask(w, amount, dim=dim, p=p), c.weight_mask.bool())


def test_random_mask(gen):
    x = torch.empty(10, 10)
    m = fd.random_mask(x, 0.37, generator=gen)
    assert int((~m).sum()) == 37 and m.shape == x.shape
    assert torch.equal(m, fd.random_mask(x, 0.37, generator=torch.Generator().manual_seed(gen.initial_seed())))


def test_numpy_in_numpy_out(gen):
    x = torch.randn(50, 3, generator=gen).numpy()
    m = fd.magnitude_mask(x, 0.5)
    assert isinstance(m, np.ndarray) and m.dtype == np.bool_
    assert np.array_equal(m, ref_masks([torch.from_numpy(x)], 0.5)[0].numpy())
    thr = fd.magnitude_threshold(x, 0.5)
    assert isinstance(thr, np.float32)
    y = x.copy()
    mask = fd.prune_(y, 0.5)
    assert np.array_equal(y, x * mask)
    assert isinstance(fd.nm_mask(x.reshape(30, 5)[:, :4].copy(), 2, 4), np.ndarray)
    ro = x.copy()
    ro.flags.writeable = False
    fd.magnitude_mask(ro, 0.5)  # reading a read-only array is fine
    with pytest.raises(ValueError, match="read-only"):
        fd.prune_(ro, 0.5)


def test_float64_reference_only(gen):
    x = torch.randn(100, dtype=torch.float64, generator=gen)
    assert torch.equal(fd.magnitude_mask(x, 0.5), ref_masks([x], 0.5)[0])  # auto -> python
    if fd._dispatch.backend_unavailable_reason("native") is None:
        with fd.use_backend("native"), pytest.raises(fd.BackendError, match=r"float64 not supported.*python: usable"):
            fd.magnitude_mask(x, 0.5)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda x: fd.magnitude_mask(x, 1.5), ValueError, "sparsity: a float fraction must be in"),
        (lambda x: fd.magnitude_mask(x, -0.1), ValueError, "sparsity"),
        (lambda x: fd.magnitude_mask(x, float("nan")), ValueError, "sparsity"),
        (lambda x: fd.magnitude_mask(x, 101), ValueError, r"int count must be in \[0, 100\]"),
        (lambda x: fd.magnitude_mask(x, True), TypeError, "bool"),
        (lambda x: fd.magnitude_mask(x, "0.5"), TypeError, "sparsity"),
        (lambda x: fd.magnitude_mask(x.int(), 0.5), TypeError, "x: expected a float32"),
        (lambda x: fd.magnitude_mask([1.0, 2.0], 0.5), TypeError, "x: expected a torch.Tensor or numpy.ndarray"),
        (lambda x: fd.nm_mask(x.reshape(10, 10), 2, 4), ValueError, "not a multiple of m = 4"),
        (lambda x: fd.nm_mask(x.reshape(10, 10), 3, 2), ValueError, "n: expected 0 <= n <= m"),
        (lambda x: fd.nm_mask(x.reshape(10, 10), 1, 2, dim=2), ValueError, "dim"),
        (lambda x: fd.channel_mask(x.reshape(10, 10), 11), ValueError, "amount"),
        (lambda x: fd.channel_mask(x.reshape(10, 10), 1, p=0), ValueError, "p: expected a norm order"),
        (lambda x: fd.global_magnitude_masks(x, 0.5), TypeError, "tensors: expected a list"),
        (lambda x: fd.random_mask(x, 0.5, generator=3), TypeError, "generator"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call(torch.randn(100))


def test_nan_raises(backend):
    x = torch.randn(1000, device=backend)
    x[[3, 500]] = float("nan")
    for fn in (lambda: fd.magnitude_mask(x, 0.5), lambda: fd.magnitude_mask(x, 0), lambda: fd.prune_(x.clone(), 1.0),
               lambda: fd.nm_mask(x, 2, 4), lambda: fd.global_magnitude_masks([x[10:20], x], 0.1)):
        with pytest.raises(ValueError, match="contains 2 NaN"):
            fn()


def test_forced_backend_error_lists_reasons():
    with fd.use_backend("cuda"):
        if fd._dispatch.backend_unavailable_reason("cuda") is not None:
            with pytest.raises(fd.BackendError) as info:
                fd.magnitude_mask(torch.randn(10), 0.5)
            msg = str(info.value)
            assert "backend 'cuda'" in msg and "python: usable" in msg and "native:" in msg and "numba:" in msg


def test_opcheck(backend, gen):
    x = make((17, 9), torch.float32, gen, backend)
    torch.library.opcheck(_ops.magnitude_masks, ([x, x[:3]], 50))
    torch.library.opcheck(_ops.magnitude_threshold, ([x], 50))
    torch.library.opcheck(_ops.magnitude_prune_, (x.clone(), 50))
    torch.library.opcheck(_ops.magnitude_prune_, (x.clone().t(), 50))
    torch.library.opcheck(_ops.nm_mask, (x[:, :8].contiguous(), 2, 4))


def test_compile_fullgraph(gen):
    x = torch.randn(64, 64, generator=gen)

    @torch.compile(fullgraph=True, backend="eager")
    def f(w):
        return w * _ops.magnitude_masks([w], 2048)[0]

    assert torch.equal(f(x), x * fd.magnitude_mask(x, 2048))
