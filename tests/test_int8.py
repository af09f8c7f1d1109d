"""int8_mm (exact, every backend and SIMD level against an int64 matmul) and int8_linear (every backend against the
reference within float tolerance; accuracy of the quantization itself)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastdistill as fd
from fastdistill import _ops

from conftest import native_simd_levels, simd_level

# (M, K, N): ones, K not a multiple of 4 or 64, N tails shorter than a panel, row tails of every microkernel, empty.
MM_SHAPES = [(1, 1, 1), (1, 5, 7), (2, 3, 64), (5, 4, 65), (7, 130, 63), (13, 64, 128), (17, 257, 129),
             (97, 1000, 300), (200, 67, 1), (1, 2051, 70), (0, 5, 3), (4, 0, 3), (4, 5, 0)]


def exact(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.cpu().long() @ b.cpu().long()).int()


def rand_int8(shape, gen, device="cpu"):
    return torch.randint(-128, 128, shape, generator=gen, dtype=torch.int8).to(device)


@pytest.mark.parametrize("m,k,n", MM_SHAPES, ids=str)
def test_int8_mm_exact(backend, gen, m, k, n):
    a, b = rand_int8((m, k), gen, backend), rand_int8((k, n), gen, backend)
    got = fd.int8_mm(a, b)
    assert got.dtype == torch.int32 and got.shape == (m, n)
    assert torch.equal(got.cpu(), exact(a, b))
    packed = fd.prepack_int8_weight(b)
    assert torch.equal(fd.int8_mm(a, packed).cpu(), exact(a, b))


@pytest.fixture(params=["amx", "vnni"])
def avx512_kernel(request):
    """The native avx512 level with its AMX kernel allowed (used where the CPU has AMX) or forbidden (VNNI)."""
    if "avx512" not in native_simd_levels():
        pytest.skip("the native avx512 level is unavailable")
    from fastdistill import _C

    with fd.use_backend("native"), simd_level("avx512"):
        _C.int8_set_amx(request.param == "amx")
        try:
            if request.param == "amx" and not _C.int8_amx_in_use():
                pytest.skip("no AMX-INT8 on this CPU")
            yield request.param
        finally:
            _C.int8_set_amx(True)


@pytest.mark.parametrize("m,k,n", MM_SHAPES + [(33, 64, 64), (100, 129, 200)], ids=str)
def test_int8_mm_avx512_kernels(avx512_kernel, gen, m, k, n):
    a, b = rand_int8((m, k), gen), rand_int8((k, n), gen)
    assert torch.equal(fd.int8_mm(a, b), exact(a, b))
    _, q, bias = make_linear(gen, n, k)
    x = torch.randn(m, k, generator=gen)
    want = ref_linear(x, q, bias)
    atol = 1e-5 * float(want.abs().max()) if m * n else 0
    torch.testing.assert_close(fd.int8_linear(x, q, bias), want, rtol=1e-5, atol=atol)


def test_int8_mm_extremes(backend):
    k = 4099  # every product at its largest magnitude, summed long enough to need the full int32 range of the sums
    for va, vb in ((-128, -128), (-128, 127), (127, -128), (127, 127)):
        a = torch.full((7, k), va, dtype=torch.int8, device=backend)
        b = torch.full((k, 67), vb, dtype=torch.int8, device=backend)
        assert torch.equal(fd.int8_mm(a, b).cpu(), exact(a, b))
        assert torch.equal(fd.int8_mm(a, fd.prepack_int8_weight(b)).cpu(), exact(a, b))


def test_int8_mm_non_contiguous(backend, gen):
    base_a, base_b = rand_int8((40, 66), gen, backend), rand_int8((66, 90), gen, backend)
    for a, b in ((base_a[::2], base_b), (base_b.t()[:, ::3], base_a.t()[::3]), (base_a[:, 1:], base_b[1:, ::2])):
        assert torch.equal(fd.int8_mm(a, b).cpu(), exact(a, b))
        assert torch.equal(fd.int8_mm(a, fd.prepack_int8_weight(b)).cpu(), exact(a, b))


def test_int8_mm_numpy_and_transposed_prepack(gen):
    a, b = rand_int8((9, 33), gen), rand_int8((33, 21), gen)
    got = fd.int8_mm(a.numpy(), b.numpy())
    assert isinstance(got, np.ndarray) and np.array_equal(got, exact(a, b).numpy())
    packed = fd.prepack_int8_weight(b.t().contiguous(), transposed=True)
    assert packed.shape == (33, 21)
    assert torch.equal(fd.int8_mm(a, packed), exact(a, b))


def make_linear(gen, n, k, bias=True):
    w = torch.randn(n, k, generator=gen)
    b = torch.randn(n, generator=gen) if bias else None
    return w, fd.prepack_int8_weight(fd.quantize(w, 8, granularity="channel")), b


@pytest.mark.parametrize("m,k,n", [(1, 1000, 1001), (1, 67, 4097), (3, 130, 513), (7, 64, 999)], ids=str)
def test_int8_few_rows_many_panels(avx512_kernel, gen, m, k, n):
    """M < 8 splits the panels statically over the threads: many panels, an odd N tail, K not a multiple of 64."""
    a, b = rand_int8((m, k), gen), rand_int8((k, n), gen)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert torch.equal(fd.int8_mm(a, b), exact(a, b))
        _, q, bias = make_linear(gen, n, k)
        x = torch.randn(m, k, generator=gen)
        want = ref_linear(x, q, bias)
        torch.testing.assert_close(fd.int8_linear(x, q, bias), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    finally:
        torch.set_num_threads(threads)


def ref_linear(x, q, bias):
    with fd.use_backend("python"):
        return fd.int8_linear(x.cpu(), q, None if bias is None else bias.cpu())


LINEAR_SHAPES = [(1, 1, 1), (1, 5, 7), (3, 130, 65), (16, 64, 128), (63, 257, 70), (64, 100, 33), (200, 67, 129),
                 (0, 8, 8)]


@pytest.mark.parametrize("m,k,n", LINEAR_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_int8_linear_matches_reference(backend, gen, m, k, n, dtype):
    _, q, bias = make_linear(gen, n, k, bias=m % 2 == 1)
    x = (torch.randn(m, k, generator=gen) * 3).to(dtype)
    if m > 2:
        x[1] = 0  # an all-zero row: scale 0, output = bias
    got = fd.int8_linear(x.to(backend), q, bias)
    want = ref_linear(x, q, bias)
    assert got.dtype == torch.float32 and got.shape == (m, n)
    # Same codes on every backend; the epilogue may contract a multiply-add (one rounding of difference).
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()) if m else 0)


def test_int8_linear_batched_numpy_and_layout(gen):
    w, q, bias = make_linear(gen, 24, 40)
    x = torch.randn(2, 40, 3, generator=gen).transpose(1, 2)  # (2, 3, 40), non-contiguous
    got = fd.int8_linear(x, q, bias)
    assert got.shape == (2, 3, 24)
    torch.testing.assert_close(got, ref_linear(x.reshape(6, 40), q, bias).reshape(2, 3, 24))
    got_np = fd.int8_linear(x.contiguous().numpy(), q, bias.numpy())
    assert isinstance(got_np, np.ndarray) and np.allclose(got_np, got.numpy(), rtol=1e-5, atol=1e-5)


def test_prepack_quantized_tensor(gen):
    w = torch.randn(24, 40, generator=gen)
    x = torch.randn(3, 40, generator=gen)
    q = fd.quantize(w, 8, granularity="channel")
    want = fd.int8_linear(x, fd.prepack_int8_weight(q.codes, q.scale, transposed=True))
    assert torch.equal(fd.int8_linear(x, fd.prepack_int8_weight(q)), want)
    qt = fd.quantize(w, 8, granularity="tensor")
    packed = fd.prepack_int8_weight(qt)
    assert torch.equal(packed.codes, qt.codes.reshape(24, 40)) and torch.equal(packed.scale, qt.scale.expand(24))
    with pytest.raises(ValueError, match="b: expected an 8-bit symmetric"):
        fd.prepack_int8_weight(fd.quantize(w, 4, granularity="channel"))
    with pytest.raises(ValueError, match="b: expected granularity"):
        fd.prepack_int8_weight(fd.quantize(w, 8, granularity="channel", axis=1))
    with pytest.raises(ValueError, match="scale: must be None"):
        fd.prepack_int8_weight(q, q.scale)


def rel_err(y, want):
    return float((y - want).norm() / want.norm())


def fbgemm(lin, x):
    """quantize_dynamic's Linear (fbgemm, per-tensor weights): the peer."""
    return torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)(x)


def test_accuracy_gaussian(gen):
    k, n, m = 512, 256, 64
    x = torch.randn(m, k, generator=gen)
    lin = torch.nn.Linear(k, n)
    with torch.no_grad():
        want = lin(x)
        ours = fd.int8_linear(x, fd.prepack_int8_weight(fd.quantize(lin.weight, 8, granularity="channel")),
                              lin.bias)
        peer = fbgemm(lin, x)
    print(f"relative Frobenius error: fastdistill {rel_err(ours, want):.4%}, "
          f"quantize_dynamic {rel_err(peer, want):.4%}")
    assert rel_err(ours, want) <= 0.01


@pytest.mark.parametrize("op", ["int8_mm", "int8_mm_packed", "int8_linear"])
def test_opcheck(gen, op):
    a, b = rand_int8((5, 19), gen), rand_int8((19, 70), gen)
    _, q, bias = make_linear(gen, 70, 19)
    args = {"int8_mm": (a, b), "int8_mm_packed": (a, q.codes, q.packed, q.comp),
            "int8_linear": (torch.randn(5, 19, generator=gen), q.codes, q.scale, q.packed, q.comp, bias)}[op]
    torch.library.opcheck(getattr(_ops, op), args, test_utils=("test_schema", "test_faketensor"))


def test_bad_inputs(gen):
    a, b = rand_int8((3, 4), gen), rand_int8((4, 5), gen)
    with pytest.raises(TypeError, match="a:"):
        fd.int8_mm(a.float(), b)
    with pytest.raises(TypeError, match="b:"):
        fd.int8_mm(a, b.int())
    with pytest.raises(ValueError, match="b:"):
        fd.int8_mm(a, rand_int8((5, 5), gen))
    with pytest.raises(ValueError, match="a:"):
        fd.int8_mm(rand_int8((3,), gen), b)
    with pytest.raises(TypeError, match="a:"):
        fd.int8_mm([[1]], b)
    with pytest.raises(ValueError, match="b:"):
        fd.int8_mm(a, fd.prepack_int8_weight(rand_int8((5, 5), gen)))
    _, q, bias = make_linear(gen, 5, 4)
    with pytest.raises(ValueError, match="x:"):
        fd.int8_linear(torch.randn(3, 5), q)
    with pytest.raises(TypeError, match="x:"):
        fd.int8_linear(a, q)
    with pytest.raises(TypeError, match="qweight:"):
        fd.int8_linear(torch.randn(3, 4), b)
    with pytest.raises(ValueError, match="qweight:"):
        fd.int8_linear(torch.randn(3, 4), fd.prepack_int8_weight(b))
    with pytest.raises(ValueError, match="bias:"):
        fd.int8_linear(torch.randn(3, 4), q, torch.randn(4))
    with pytest.raises(ValueError, match="scale:"):
        fd.prepack_int8_weight(b, torch.ones(4))
    with pytest.raises(TypeError, match="b:"):
        fd.prepack_int8_weight(b.float())


# Row counts that end on every microkernel's tile and tail (4-row sign trick, 6-row widening and VNNI), K short of a
# group or of 64, N tails of every 8/16-column chunk of a panel.
PATH_SHAPES = [(1, 3, 5), (2, 4, 8), (3, 61, 17), (4, 64, 64), (5, 65, 70), (6, 127, 33), (7, 129, 127),
               (9, 250, 66), (11, 31, 200), (13, 1, 9), (24, 300, 129)]


def rand_int8_without_min(shape, gen):
    return torch.randint(-127, 128, shape, generator=gen, dtype=torch.int8)


@pytest.mark.parametrize("m,k,n", PATH_SHAPES, ids=str)
def test_int8_mm_fast_and_exact_paths(backend, gen, m, k, n):
    """A B within [-127, 127] runs the fast kernels (the sign trick at avx2); one -128 in B switches to the exact
    ones (int16 widening at avx2). Both exact against int64, with A's extremes -128 and 127 present."""
    a = rand_int8((m, k), gen)
    a.view(-1)[0], a.view(-1)[-1] = -128, 127
    b = rand_int8_without_min((k, n), gen)
    b_min = b.clone()
    b_min[k // 2, n - 1] = -128
    for bb in (b, b_min):
        want = exact(a, bb)
        assert torch.equal(fd.int8_mm(a.to(backend), bb.to(backend)).cpu(), want)
        assert torch.equal(fd.int8_mm(a.to(backend), fd.prepack_int8_weight(bb.to(backend))).cpu(), want)


def test_int8_mm_fast_path_extremes(backend):
    k = 4099  # the sign trick's largest pair sums (|a| = 128 against |b| = 127), summed over the int32 range
    for va, vb in ((-128, -127), (-128, 127), (127, -127), (-127, 127)):
        a = torch.full((5, k), va, dtype=torch.int8, device=backend)
        b = torch.full((k, 70), vb, dtype=torch.int8, device=backend)
        assert torch.equal(fd.int8_mm(a, b).cpu(), exact(a, b))


@pytest.mark.parametrize("m", [1, 5, 16])
def test_int8_linear_weight_with_min(backend, gen, m):
    """Codes given by the user may hold -128: int8_linear then runs the exact kernels."""
    n, k = 70, 131
    codes = rand_int8((n, k), gen)
    codes[3, 7] = -128
    scale = torch.rand(n, generator=gen) / 100
    q = fd.prepack_int8_weight(codes, scale, transposed=True)
    x = torch.randn(m, k, generator=gen)
    want = ref_linear(x, q, None)
    torch.testing.assert_close(fd.int8_linear(x.to(backend), q).cpu(), want, rtol=1e-5,
                               atol=1e-5 * float(want.abs().max()))


def test_int8_kernel_choice():
    """Each native level names the kernels it runs, so the tests above reach every one of them."""
    if "avx2" not in native_simd_levels():
        pytest.skip("the native avx2 level is unavailable")
    from fastdistill import _C

    with simd_level("avx2"):
        assert _C.int8_kernel_name(16, False) == "avx2-sign"
        assert _C.int8_kernel_name(16, True) == "avx2-widen"
    with simd_level("scalar"):
        assert _C.int8_kernel_name(16, False) == _C.int8_kernel_name(16, True) == "scalar"
    if "avx512" in native_simd_levels() and _C.cpu_features().get("avx512vnni"):
        with simd_level("avx512"):
            _C.int8_set_amx(False)
            try:
                assert _C.int8_kernel_name(16, False) == _C.int8_kernel_name(16, True) == "avx512-vnni"
            finally:
                _C.int8_set_amx(True)
