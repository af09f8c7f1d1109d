"""Quantization ops: every backend against the reference (codes, scales and zero points exactly equal, dequantized
values exactly equal), the documented semantics on the reference, and bad input."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import fastdistill as fd
from fastdistill import _ops
from fastdistill.formats.codes import qrange

LINEAR = ("symmetric", "asymmetric")
# (shape, granularity, axis, group_size): awkward row lengths around SIMD widths (1, 15, 17, 31, 33, 63, 65, 129,
# 255, 257), many tiny groups, few long rows (the split-row path), empty tensors.
CASES = [
    ((1,), "tensor", 0, 0),
    ((7,), "tensor", 0, 0),
    ((0,), "tensor", 0, 0),
    ((70001,), "tensor", 0, 0),
    ((3, 40001), "channel", 0, 0),
    ((33, 17), "channel", 0, 0),
    ((65, 31), "channel", 1, 0),
    ((4, 1, 129), "channel", -1, 0),
    ((5, 0), "channel", 0, 0),
    ((0, 5), "channel", 0, 0),
    ((0, 6), "group", 0, 3),
    ((300, 255), "channel", 0, 0),
    ((17, 257), "channel", 0, 0),
    ((9, 63), "group", 0, 3),
    ((6, 130), "group", 0, 65),
    ((40, 256), "group", 0, 128),
    ((8, 33), "group", 1, 1),
    ((2, 3, 30), "group", 0, 15),
]


def case_id(c):
    shape, gran, axis, gs = c
    return f"{'x'.join(map(str, shape))}-{gran}-a{axis}" + (f"-g{gs}" if gs else "")


def make(shape, gen, device="cpu", kind="normal"):
    x = torch.randn(shape, generator=gen)
    if kind == "scaled" and x.numel():  # wildly different magnitudes, exact zeros, a positive-only stretch
        x = x * torch.logspace(-20, 20, x.numel()).reshape(shape)
        flat = x.view(-1)
        flat[:: 7] = 0.0
        flat[: flat.numel() // 2] = flat[: flat.numel() // 2].abs() + 0.5  # asymmetric zero point off mid-range
    if kind == "positive":
        x = x.abs() + 0.5
    return x.to(device)


def q_args(gran, axis, gs):
    return dict(granularity=gran, axis=axis, group_size=gs or 128)


def reference(x, bits, scheme, **kw):
    with fd.use_backend("python"):
        q = fd.quantize(x.cpu(), bits, scheme=scheme, **kw)
        return q, q.dequantize()


def assert_same(q, want):
    assert q.codes.dtype == want.codes.dtype and q.codes.shape == want.codes.shape
    assert torch.equal(q.codes.cpu(), want.codes), (q.codes, want.codes)
    assert torch.equal(q.scale.cpu(), want.scale)
    assert torch.equal(q.zero_point.cpu(), want.zero_point)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("kind", ["normal", "scaled"])
def test_matches_reference(backend, gen, case, bits, kind):
    shape, gran, axis, gs = case
    x = make(shape, gen, backend, kind)
    for scheme in LINEAR:
        q = fd.quantize(x, bits, scheme=scheme, **q_args(gran, axis, gs))
        want, want_deq = reference(x, bits, scheme, **q_args(gran, axis, gs))
        assert_same(q, want)
        deq = q.dequantize()
        assert deq.shape == x.shape and deq.dtype == x.dtype
        assert torch.equal(deq.cpu(), want_deq)


@pytest.mark.parametrize("case", [((1, 400003), "tensor", 0, 0), ((2, 300001), "channel", 0, 0),
                                  ((97, 4099), "channel", 0, 0), ((512, 1024), "group", 0, 128)], ids=case_id)
def test_parallel_paths(backend, gen, case):
    # large enough for several threads: split rows (few long rows) and row-parallel (many rows) schedules
    shape, gran, axis, gs = case
    x = make(shape, gen, backend)
    x.view(-1)[shape[-1] // 3] = 50.0  # the row maximum in a later piece than the first
    for bits, scheme in ((8, "symmetric"), (4, "asymmetric"), (2, "symmetric")):
        q = fd.quantize(x, bits, scheme=scheme, **q_args(gran, axis, gs))
        want, want_deq = reference(x, bits, scheme, **q_args(gran, axis, gs))
        assert_same(q, want)
        assert torch.equal(q.dequantize().cpu(), want_deq)


def test_rounding_ties_and_special_values(backend):
    # scale 1: every x.5 is a tie, rounded half to even as torch.round does
    x = torch.tensor([127.0, 0.5, 1.5, 2.5, -0.5, -2.5, 3.5, -126.5, 0.0, -0.0], device=backend)
    q = fd.quantize(x, 8)
    assert q.scale.item() == 1.0
    assert q.int_codes().reshape(-1).tolist() == [127, 0, 2, 2, 0, -2, 4, -126, 0, 0]
    halves = (torch.arange(-254, 255) / 2).repeat(3, 1).to(backend)  # every lane of the vector body hits a tie
    qh = fd.quantize(halves, 8, granularity="channel")
    assert torch.equal(qh.int_codes().cpu(), torch.round(halves.cpu()).int())
    rows = torch.zeros(4, 37, device=backend)  # all-zero row, subnormal row, huge row, mixed
    rows[1, 3] = 1e-45
    rows[2] = -3.0e38  # all negative, so the asymmetric range 0 - min stays finite
    rows[2, 5] = -3.4e38
    rows[3] = torch.linspace(-1, 1, 37)
    for bits in (8, 4, 2):
        for scheme in LINEAR:
            q = fd.quantize(rows, bits, scheme=scheme, granularity="channel")
            want, want_deq = reference(rows, bits, scheme, granularity="channel")
            assert_same(q, want)
            assert q.scale[0].item() == 1.0 and q.dequantize()[0].abs().max().item() == 0.0
            assert torch.equal(q.dequantize().cpu(), want_deq)


def test_dequantize_is_code_minus_zero_point_times_scale(backend, gen):
    x = make((31, 77), gen, backend)
    for bits in (8, 4, 2):
        for scheme in LINEAR:
            q = fd.quantize(x, bits, scheme=scheme, granularity="channel")
            codes = q.int_codes().cpu()
            want = (codes - q.zero_point.cpu()[:, None]).float() * q.scale.cpu()[:, None]
            assert torch.equal(q.dequantize().cpu(), want)
            lo, hi = qrange(bits, scheme)
            assert lo <= int(codes.min()) and int(codes.max()) <= hi


def test_dequantize_into_out(backend, gen):
    x = make((24, 64), gen, backend)
    for kw in (dict(granularity="channel"), dict(granularity="group", group_size=16, scheme="asymmetric"),
               dict(granularity="channel", axis=1), dict()):
        for bits in (8, 4):
            q = fd.quantize(x, bits, **kw)
            out = torch.full_like(x, float("nan"))
            assert fd.dequantize(q, out) is out
            assert torch.equal(out, q.dequantize())
    q = fd.quantize(x, 8)
    with pytest.raises(ValueError, match="out"):
        q.dequantize(out=torch.empty(24, 63, device=backend))
    with pytest.raises(ValueError, match="out"):
        q.dequantize(out=torch.empty(24, 64, dtype=torch.float16, device=backend))
    empty = fd.quantize(torch.empty(3, 0, device=backend), 4, granularity="channel")
    assert empty.dequantize(out=torch.empty(3, 0, device=backend)).shape == (3, 0)


def test_packing_layout(backend):
    x = torch.tensor([[-7.0, 7.0, 0.0]], device=backend)  # symmetric int4: scale 1, codes -7, 7, 0
    q = fd.quantize(x, 4, granularity="channel")
    assert q.codes.dtype == torch.uint8 and q.codes.shape == (1, 2)
    assert q.codes.cpu().tolist() == [[(7 + 8) << 4 | (-7 + 8), 0 + 8]]  # first element low; pad field 0
    q2 = fd.quantize(torch.tensor([[0.0, 1.0, -1.0, 1.0, 1.0]], device=backend), 2, granularity="channel")
    assert q2.codes.cpu().tolist() == [[2 | 3 << 2 | 1 << 4 | 3 << 6, 3]]  # fields code + 2
    qa = fd.quantize(torch.tensor([0.0, 1.0, 255.0], device=backend), 8, scheme="asymmetric")
    assert qa.codes.dtype == torch.uint8 and qa.codes.cpu().tolist() == [[0, 1, 255]]
    assert qa.zero_point.item() == 0 and qa.scale.item() == 1.0


def test_asymmetric_zero_point(backend, gen):
    x = make((20, 50), gen, backend, "positive") - 1.0
    q = fd.quantize(x, 8, scheme="asymmetric", granularity="channel")
    lo = torch.clamp(x.amin(1), max=0).cpu()
    assert torch.equal(q.zero_point.cpu(), torch.clamp(torch.round(-lo / q.scale.cpu()), 0, 255).int())
    zeros = fd.quantize(torch.zeros(3, 4, device=backend), 4, scheme="asymmetric", granularity="channel")
    assert torch.equal(zeros.dequantize().cpu(), torch.zeros(3, 4))


def test_non_contiguous(backend, gen):
    base = make((48, 66), gen, backend)
    for x in (base.t(), base[:, ::3], base[::2, 1:]):
        for gran, gs in (("tensor", 0), ("channel", 0), ("group", x.shape[1] // 2 if x.shape[1] % 2 == 0 else 1)):
            q = fd.quantize(x, 4, scheme="asymmetric", **q_args(gran, 0, gs))
            want, want_deq = reference(x.contiguous(), 4, "asymmetric", **q_args(gran, 0, gs))
            assert_same(q, want)
            assert torch.equal(q.dequantize().cpu(), want_deq)


def test_half_precision_and_numpy_inputs(backend, gen):
    x = make((16, 40), gen, backend)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        q = fd.quantize(x.to(dtype), 8, granularity="channel")
        want, _ = reference(x.to(dtype).float(), 8, "symmetric", granularity="channel")
        assert_same(q, want)
        assert q.dequantize().dtype == dtype
    if backend == "cpu":
        qn = fd.quantize(x.numpy(), 4, granularity="group", group_size=8)
        assert_same(qn, reference(x, 4, "symmetric", granularity="group", group_size=8)[0])
        assert isinstance(fd.fake_quantize(x.numpy(), 4), np.ndarray)


def test_other_methods_run_on_reference_only(backend, gen):
    x = make((8, 64), gen, backend)
    compiled = fd.get_backend() in ("native", "numba")
    for kw in (dict(scale_method="mse"), dict(scale_method="percentile"), dict(scheme="log2"), dict(bits=1)):
        args = {"bits": 4, "granularity": "channel", **kw}
        if compiled:
            with pytest.raises(fd.BackendError, match="compiled kernels"):
                fd.quantize(x, **args)
        else:
            assert fd.quantize(x, **args).dequantize().shape == x.shape


# ---- semantics of the reference (documented in fastdistill.quantization) ------------------------------------


def test_symmetric_formula(gen):
    x = make((5, 33), gen)
    for bits in (8, 4, 2):
        qmax = 2 ** (bits - 1) - 1
        q = fd.quantize(x, bits, granularity="channel")
        scale = x.abs().amax(1) / qmax
        assert torch.equal(q.scale, scale)
        assert torch.equal(q.int_codes(), torch.clamp(torch.round(x / scale[:, None]), -qmax, qmax).int())
        assert torch.equal(fd.quantize(-x, bits, granularity="channel").int_codes(), -q.int_codes())


def test_log2(gen):
    x = torch.tensor([[8.0, -2.0, 1.0, 0.0, 0.75, -0.001]])
    q = fd.quantize(x, 4, scheme="log2", granularity="channel")  # scale 8, qmax 7: 8 * 2^(m - 7)
    assert q.scale.item() == 8.0
    assert q.int_codes().tolist() == [[7, -5, 4, 0, 4, 0]]  # 0.75 -> log2(0.09375) = -3.4 -> 2^-3; tiny -> 0
    assert q.dequantize().tolist() == [[8.0, -2.0, 1.0, 0.0, 1.0, 0.0]]
    w = make((16, 100), gen)
    d = fd.quantize(w, 8, scheme="log2", granularity="channel").dequantize()
    ratio = (d / w)[w != 0]
    assert bool(((ratio >= 2 ** -0.5 - 1e-6) & (ratio <= 2 ** 0.5 + 1e-6)).all())  # within half an octave


def test_binary(gen):
    x = make((6, 50), gen)
    q = fd.quantize(x, 1, granularity="channel")
    assert torch.allclose(q.scale, x.abs().mean(1))
    assert torch.equal(q.int_codes(), torch.where(x >= 0, 1, -1).int())
    assert q.codes.shape == (6, 7) and torch.equal(q.dequantize(), torch.where(x >= 0, 1.0, -1.0) * q.scale[:, None])
    with pytest.raises(ValueError, match="1-bit"):
        fd.quantize(x, 1, scheme="asymmetric")


def test_scale_methods(gen):
    x = make((32, 512), gen)
    x[:, 0] = 8.0  # an outlier per row
    err = {}
    for method in ("absmax", "mean", "percentile", "mse"):
        q = fd.quantize(x, 4, granularity="channel", scale_method=method, percentile=99.0)
        err[method] = ((q.dequantize() - x) ** 2).sum(1)
        if method != "absmax":
            assert bool((q.scale < 8.0 / 7).all()), method  # the outlier is clipped
    assert bool((err["mse"] <= err["absmax"]).all())
    k = int(np.ceil(0.99 * 512))
    want = x.abs().kthvalue(k, 1).values / 7
    assert torch.equal(fd.quantize(x, 4, granularity="channel", scale_method="percentile", percentile=99.0).scale,
                       want)
    want_mean = torch.minimum(x.abs().amax(1), x.abs().mean(1) * 8) / 7
    assert torch.equal(fd.quantize(x, 4, granularity="channel", scale_method="mean").scale, want_mean)
    qa = fd.quantize(x, 8, scheme="asymmetric", granularity="channel", scale_method="mse")
    assert qa.dequantize().shape == x.shape


def test_group_layout(gen):
    w = make((6, 256), gen)
    q = fd.quantize(w, 4, granularity="group", group_size=128)
    assert q.scale.shape == (12,) and q.codes.shape == (12, 64)
    assert torch.equal(q.scale.reshape(6, 2), w.reshape(6, 2, 128).abs().amax(-1) / 7)
    conv = make((4, 3, 2, 8), gen)  # groups of the flattened (in, kh, kw) of each output channel
    qc = fd.quantize(conv, 8, granularity="group", group_size=12, axis=0)
    assert torch.equal(qc.scale, conv.reshape(4, 4, 12).abs().amax(-1).reshape(-1) / 127)
    assert qc.dequantize().shape == conv.shape


# ---- container, autograd, ops ----------------------------------------------------------------------------------


def test_state_dict_round_trip(gen):
    x = make((10, 48), gen).to(torch.bfloat16)
    for kw in (dict(bits=8), dict(bits=4, scheme="asymmetric", granularity="group", group_size=16),
               dict(bits=2, granularity="channel", axis=1), dict(bits=1, granularity="channel")):
        q = fd.quantize(x, **kw)
        buf = io.BytesIO()
        torch.save(q.state_dict(), buf)
        buf.seek(0)
        q2 = fd.QuantizedTensor.from_state_dict(torch.load(buf, weights_only=True))
        assert_same(q2, q)
        assert (q2.bits, q2.scheme, q2.granularity, q2.axis, q2.group_size, q2.shape, q2.dtype) == (
            q.bits, q.scheme, q.granularity, q.axis, q.group_size, q.shape, q.dtype)
        assert torch.equal(q2.dequantize(), q.dequantize()) and q2.dequantize().dtype == torch.bfloat16
        assert q2.nbytes == q.codes.numel() + 8 * q.scale.numel()
        assert torch.equal(q.to("cpu").dequantize(), q.dequantize())
        assert "QuantizedTensor(shape=(10, 48)" in repr(q)


def test_fake_quantize_straight_through(backend, gen):
    x = make((12, 64), gen, backend).requires_grad_()
    y = fd.fake_quantize(x, 4, granularity="group", group_size=16)
    assert torch.equal(y.detach(), fd.quantize(x.detach(), 4, granularity="group", group_size=16).dequantize())
    g = torch.randn(12, 64, generator=gen).to(backend)
    y.backward(g)
    assert torch.equal(x.grad, g)  # identity, also where values were clipped
    x8 = make((5, 7), gen, backend).requires_grad_()
    fd.fake_quantize(x8 * 3, 8, scheme="asymmetric").sum().backward()
    assert torch.equal(x8.grad, torch.full_like(x8, 3.0))


def test_opcheck(backend, gen):
    x = make((17, 40), gen, backend)
    for bits, scheme in ((8, "symmetric"), (4, "asymmetric"), (2, "symmetric")):
        torch.library.opcheck(_ops.quantize, (x, bits, scheme, "absmax", 99.99))
        codes, scale, zp = _ops.quantize(x, bits, scheme, "absmax", 99.99)
        torch.library.opcheck(_ops.dequantize, (codes, scale, zp, bits, scheme, 40))
        torch.library.opcheck(_ops.dequantize_into, (codes, scale, zp, bits, scheme, torch.empty_like(x)))


def test_compile_fullgraph(gen):
    x = make((32, 64), gen)

    @torch.compile(fullgraph=True, backend="eager")
    def f(x):
        codes, scale, zp = _ops.quantize(x, 4, "symmetric", "absmax", 99.99)
        return _ops.dequantize(codes, scale, zp, 4, "symmetric", 64)

    assert torch.equal(f(x), fd.quantize(x, 4, granularity="channel").dequantize())


def test_bad_input(backend):
    x = torch.randn(4, 6, device=backend)
    with pytest.raises(ValueError, match="bits"):
        fd.quantize(x, 3)
    with pytest.raises(ValueError, match="scheme"):
        fd.quantize(x, scheme="linear")
    with pytest.raises(ValueError, match="granularity"):
        fd.quantize(x, granularity="row")
    with pytest.raises(ValueError, match="axis"):
        fd.quantize(x, granularity="channel", axis=2)
    with pytest.raises(ValueError, match="group_size"):
        fd.quantize(x, granularity="group", group_size=4)
    with pytest.raises(ValueError, match="group_size"):
        fd.quantize(x, granularity="group", group_size=0)
    with pytest.raises(ValueError, match="scale_method"):
        fd.quantize(x, scale_method="max")
    with pytest.raises(ValueError, match="percentile"):
        fd.quantize(x, scale_method="percentile", percentile=0)
    with pytest.raises(ValueError, match="0-d"):
        fd.quantize(torch.tensor(1.0), granularity="channel")
    with pytest.raises(TypeError, match="x"):
        fd.quantize(torch.ones(3, dtype=torch.int32))
    with pytest.raises(TypeError, match="q"):
        fd.dequantize(x)
    for bad in (float("nan"), float("inf"), -float("inf")):
        for gran, shape in (("tensor", (3, 70000)), ("channel", (3, 70000)), ("channel", (40, 100))):
            for scheme in LINEAR:
                y = torch.randn(shape)
                y[1, 77] = bad
                with pytest.raises(ValueError, match="1 NaN or infinite"):
                    fd.quantize(y.to(backend), 4, scheme=scheme, granularity=gran)
    with pytest.raises(ValueError, match="overflows"):
        fd.quantize(torch.tensor([3e38, -3e38], device=backend), 8, scheme="asymmetric")
