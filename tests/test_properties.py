"""Property tests: every op, on every CPU backend (native at each SIMD level), against the pure-torch reference, over
shapes drawn around the kernels' edges (0, 1, odd sizes, SIMD widths 8/16, chunks and tiles 64/512), dtypes, strides
(transposed and sliced views) and extreme values (tiny and 1e30 scales, temperatures to 1e6). Integer outputs must be
identical; float outputs within the documented tolerances; and where the reference raises, every backend raises the
same exception type.

Quick by default (derandomized: the same examples every run, as CI needs). A longer, random run:
``FASTDISTILL_PROPERTY_EXAMPLES=2000 FASTDISTILL_PROPERTY_RANDOM=1 pytest tests/test_properties.py``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, List, Tuple

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastdistill as fd
from fastdistill._dispatch import backend_unavailable_reason

from conftest import native_simd_levels, simd_level

EXAMPLES = int(os.environ.get("FASTDISTILL_PROPERTY_EXAMPLES", "12"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("FASTDISTILL_PROPERTY_RANDOM"),
                    suppress_health_check=list(HealthCheck), database=None)

EDGES = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 127, 129, 255, 257, 511, 512, 513, 1000]
SMALL = [1, 2, 3, 5, 8, 15, 16, 17, 33, 64, 65]
sizes = st.sampled_from(EDGES)
small = st.sampled_from(SMALL)
scales = st.sampled_from([1e-30, 1e-3, 1.0, 30.0, 1e30])


def _combos() -> List[Tuple[str, str]]:
    out = [(b, "") for b in ("numba",) if backend_unavailable_reason(b) is None]
    return out + [("native", lv) for lv in native_simd_levels()]


COMBOS = _combos()


@contextlib.contextmanager
def _on(backend: str, level: str) -> Iterator[None]:
    with fd.use_backend(backend), (simd_level(level) if level else contextlib.nullcontext()):
        yield


def _run(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except (ValueError, TypeError, fd.BackendError) as exc:
        return exc


def check_backends(fn: Callable[[], object], compare: Callable[[object, object], None]) -> None:
    """fn() on the reference and on every backend combination that can serve it: same exception type, or results
    that pass ``compare(got, want)``."""
    with fd.use_backend("python"):
        want = _run(fn)
    for backend, level in COMBOS:
        with _on(backend, level):
            got = _run(fn)
        where = f"{backend}{'-' + level if level else ''}"
        if isinstance(got, fd.BackendError):
            continue  # this backend does not serve these inputs (dtype, method): the reference did
        if isinstance(want, Exception) or isinstance(got, Exception):
            assert type(got) is type(want), f"{where}: {got!r} vs reference {want!r}"
            continue
        compare(got, want)


def equal(got, want) -> None:
    if isinstance(want, (list, tuple)):
        for g, w in zip(got, want):
            equal(g, w)
        return
    assert torch.equal(got, want)


def close(rtol: float, atol_frac: float = 0.0, atol_min: float = 0.0) -> Callable[[object, object], None]:
    """allclose with atol = max(atol_frac * max|want|, atol_min) (the scale of the output, or the resolution of
    fp32 arithmetic for outputs that cancel to ~0, e.g. a loss when student and teacher coincide), NaN where the
    reference has NaN."""

    def compare(got, want) -> None:
        if isinstance(want, (list, tuple)):
            for g, w in zip(got, want):
                compare(g, w)
            return
        g, w = got.double(), want.double()
        finite = torch.isfinite(w)
        assert torch.equal(torch.isnan(g), torch.isnan(w)), "NaN pattern differs from the reference"
        scale = float(w[finite].abs().max()) if bool(finite.any()) else 0.0
        torch.testing.assert_close(g[finite], w[finite], rtol=rtol, atol=max(atol_frac * scale, atol_min))

    return compare


def tensor(data, shape, scale, dtype=torch.float32, transposed=False) -> torch.Tensor:
    """Random values of ``scale`` in ``shape``; a transposed (non-contiguous) view when asked."""
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    if transposed and len(shape) == 2:
        return (torch.randn(shape[::-1], generator=g) * scale).to(dtype).t()
    return (torch.randn(shape, generator=g) * scale).to(dtype)


# ------------------------------------------------------------------------------------------------ pruning


@SETTINGS
@given(st.data(), sizes, small, st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
       st.floats(0, 1), st.booleans(), scales)
def test_magnitude_ops(data, rows, cols, dtype, sparsity, transposed, scale):
    x = tensor(data, (rows, cols), min(scale, 1e4), dtype, transposed)
    check_backends(lambda: fd.magnitude_mask(x, sparsity), equal)
    check_backends(lambda: fd.global_magnitude_masks([x, x[:1]], sparsity), equal)
    check_backends(lambda: fd.magnitude_threshold(x, sparsity), equal)
    check_backends(lambda: (lambda y: (fd.prune_(y, sparsity), y)[::-1])(x.clone()), equal)


@SETTINGS
@given(st.data(), sizes, st.sampled_from([(2, 4), (1, 4), (4, 8), (0, 2), (3, 3), (7, 16)]),
       st.sampled_from([torch.float32, torch.bfloat16]), st.booleans())
def test_nm_mask(data, rows, nm, dtype, transposed):
    n, m = nm
    x = tensor(data, (rows, 4 * m), 1.0, dtype, transposed)
    check_backends(lambda: fd.nm_mask(x, n, m), equal)


# ------------------------------------------------------------------------------------------------ quantization


@SETTINGS
@given(st.data(), sizes, small, st.sampled_from([8, 4, 2]), st.sampled_from(["symmetric", "asymmetric"]),
       st.sampled_from(["tensor", "channel"]), scales, st.booleans())
def test_quantize_dequantize(data, rows, cols, bits, scheme, granularity, scale, transposed):
    x = tensor(data, (rows, cols), scale, torch.float32, transposed)

    def run():
        q = fd.quantize(x, bits, scheme=scheme, granularity=granularity)
        return q.codes, q.scale, q.zero_point, q.dequantize()

    check_backends(run, equal)  # codes, scales and dequantized values bit-identical


# ------------------------------------------------------------------------------------------------ int8


@SETTINGS
@given(st.data(), st.sampled_from([0, 1, 2, 5, 7, 33, 64, 65, 100]), st.sampled_from([1, 3, 4, 17, 64, 65, 130]),
       st.sampled_from([1, 7, 63, 64, 65, 129]), st.booleans())
def test_int8_mm_and_linear(data, m, k, n, with_bias):
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    a = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (k, n), generator=g, dtype=torch.int8)
    check_backends(lambda: fd.int8_mm(a, b), equal)
    w = fd.prepack_int8_weight(b, torch.rand(n, generator=g) + 0.01)
    check_backends(lambda: fd.int8_mm(a, w), equal)
    x = torch.randn(m, k, generator=g) * data.draw(scales)
    bias = torch.randn(n, generator=g) if with_bias else None
    check_backends(lambda: fd.int8_linear(x, w, bias), close(1e-5, 1e-5))


# ------------------------------------------------------------------------------------------------ sparse


@SETTINGS
@given(st.data(), st.sampled_from([1, 2, 5, 16, 65]), st.sampled_from([1, 3, 17, 64, 300]),
       st.sampled_from([0, 1, 3, 4, 9]), st.floats(0, 1), st.sampled_from([torch.float32, torch.bfloat16, torch.int8]))
def test_sparse_matmul(data, rows, cols, batch, density, vdtype):
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    w = torch.randn(rows, cols, generator=g) * (torch.rand(rows, cols, generator=g) < density)
    sw = fd.SparseWeight.from_dense(w, vdtype)
    x = torch.randn(batch, cols, generator=g)
    bias = torch.randn(rows, generator=g)
    check_backends(lambda: fd.sparse_linear(x, sw, bias), close(1e-5, 1e-5))
    check_backends(lambda: fd.spmm(sw, x.t()), close(1e-5, 1e-5))


# ------------------------------------------------------------------------------------------------ distillation

TEMPERATURES = st.sampled_from([0.5, 1.0, 2.0, 4.0, 10.0, 11.0, 1e3, 1e6])


def loss_and_grad(rtol: float, temperature: float, atol_frac: float = 1e-4) -> Callable[[object, object], None]:
    """Compares (loss rows, gradient): fp32 rows carry ~1e-7 absolute per log-probability, times T^2 in the loss
    and T in the gradient."""
    loss = close(rtol, atol_frac, 1e-6 * max(1.0, temperature) ** 2)
    grad = close(rtol, atol_frac, 1e-6 * max(1.0, temperature))

    def compare(got, want) -> None:
        loss(got[0], want[0])
        grad(got[1], want[1])

    return compare


def _kd(s, t, y, **kw):
    x = s.clone().requires_grad_()
    loss = fd.kd_loss(x, t, y, reduction="none", **kw)
    loss.sum().backward()
    return loss.detach(), x.grad


@SETTINGS
@given(st.data(), st.sampled_from([0, 1, 3, 17]), st.sampled_from([1, 2, 7, 16, 17, 100, 513, 1100]),
       st.sampled_from(["kl", "reverse_kl", "jsd"]), TEMPERATURES, st.sampled_from([1.0, 3.0, 30.0]),
       st.sampled_from([0.0, 0.5, 1.0]), st.booleans(), st.sampled_from([torch.float32, torch.bfloat16]))
def test_kd_loss(data, rows, V, divergence, temperature, scale, alpha, log_probs, dtype):
    s = tensor(data, (rows, V), scale)
    t = tensor(data, (rows, V), scale)
    if log_probs:
        t = t.log_softmax(-1)
    y = torch.randint(0, V, (rows,))
    if rows:
        y[0] = -100

    def run():
        return _kd(s.to(dtype), t.to(dtype), y, temperature=temperature, alpha=alpha, divergence=divergence,
                   teacher_log_probs=log_probs)

    # the fp32 kernel row (T <= 10): ~1e-6 of the loss; bf16 inputs are converted exactly, the gradient is rounded
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    check_backends(run, loss_and_grad(tol, min(temperature, 10.0), tol))  # above T = 10 the native row is double


@SETTINGS
@given(st.data(), st.sampled_from([0, 1, 3, 9]), st.sampled_from([2, 7, 64, 300]), st.sampled_from([1, 2, 5]),
       st.sampled_from(["logits", "log_probs", "probs"]), st.sampled_from(["none", "bucket"]), TEMPERATURES,
       st.sampled_from([0.3, 1.0]))
def test_sparse_kd_loss(data, rows, V, K, values, tail, temperature, alpha):
    K = min(K, V)
    s = tensor(data, (rows, V), 3.0)
    t = tensor(data, (rows, V), 3.0).log_softmax(-1)
    top = t.topk(K, -1)
    vals = top.values if values == "log_probs" else top.values.exp() if values == "probs" else top.values * 2
    if values == "logits" and tail == "bucket":
        tail = "none"
    y = torch.randint(0, V, (rows,))

    def run():
        x = s.clone().requires_grad_()
        loss = fd.sparse_kd_loss(x, top.indices, vals, y, values=values, tail=tail, temperature=temperature,
                                 alpha=alpha, reduction="none")
        loss.sum().backward()
        return loss.detach(), x.grad

    # docs/errors.md: tempered teacher logits at T >= 1e5 agree to 1e-3 (the reference's own rounding)
    check_backends(run, loss_and_grad(1e-3 if values == "logits" and temperature >= 1e5 else 1e-4,
                                      min(temperature, 10.0)))


@SETTINGS
@given(st.data(), st.sampled_from([0, 1, 5, 33]), st.sampled_from([3, 17, 100]), st.sampled_from([1, 4, 16]),
       st.sampled_from([1, 2, 7, None]), TEMPERATURES)
def test_fused_linear_kd_loss_matches_kd_loss(data, rows, V, d, chunk, temperature):
    hs, ws = tensor(data, (rows, d), 1.0), tensor(data, (V, d), 1.0)
    ht, wt = tensor(data, (rows, d), 1.0), tensor(data, (V, d), 1.0)
    y = torch.randint(0, V, (rows,))

    def fused():
        h, w = hs.clone().requires_grad_(), ws.clone().requires_grad_()
        loss = fd.fused_linear_kd_loss(h, w, ht, wt, y, chunk_size=chunk, temperature=temperature)
        loss.backward()
        return loss.detach(), h.grad, w.grad

    def plain():
        h, w = hs.clone().requires_grad_(), ws.clone().requires_grad_()
        loss = fd.kd_loss(h @ w.t(), ht @ wt.t(), y, temperature=temperature)
        loss.backward()
        return loss.detach(), h.grad, w.grad

    close(1e-4, 1e-4)(_run(fused), _run(plain))


# ------------------------------------------------------------------------------------------------ NaN policy


@SETTINGS
@given(st.data(), st.sampled_from([1, 4]), st.sampled_from([3, 40, 600]), st.sampled_from(["kl", "reverse_kl", "jsd"]),
       TEMPERATURES, st.sampled_from(["nan", "inf", "-inf", "-inf row"]), st.sampled_from(["student", "teacher"]))
def test_never_a_finite_loss_with_a_nan_gradient(data, rows, V, divergence, temperature, bad, where):
    s, t = tensor(data, (rows, V), 2.0), tensor(data, (rows, V), 2.0)
    target = s if where == "student" else t
    col = data.draw(st.integers(0, V - 1))
    if bad == "-inf row":
        target[0] = float("-inf")
    else:
        target[0, col] = float(bad)
    for backend, level in [("python", "")] + COMBOS:
        with _on(backend, level):
            loss, grad = _kd(s, t, None, temperature=temperature, divergence=divergence, alpha=1.0)
        for r in range(rows):
            if bool(torch.isnan(grad[r]).any()):
                assert not bool(torch.isfinite(loss[r])), f"{backend}: finite loss {loss[r]} with a NaN gradient"
            if bool(torch.isnan(loss[r])):
                assert bool(torch.isnan(grad[r]).any()), f"{backend}: NaN loss with a NaN-free gradient"
        assert bool(torch.isfinite(loss[1:]).all()) and bool(torch.isfinite(grad[1:]).all())
