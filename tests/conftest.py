"""Shared fixtures: every op test runs once per backend (unavailable ones are skipped with the reason), and the
native backend once per SIMD level this CPU supports."""
from __future__ import annotations

import contextlib
from typing import Iterator

import pytest
import torch

import fastdistill as fd
from fastdistill._dispatch import backend_unavailable_reason
from fastdistill.bench import at_simd_level as simd_level  # noqa: F401  (the tests' way to switch levels)
from fastdistill.bench import supported_levels as native_simd_levels

CPU_BACKENDS = ("python", "native", "numba")


def _backend_params():
    params = []
    for b in CPU_BACKENDS:
        if b == "native":
            levels = native_simd_levels() or ["unbuilt"]
            params += [pytest.param(("native", lv), id=f"native-{lv}") for lv in levels]
        else:
            params.append(pytest.param((b, None), id=b))
    params.append(pytest.param(("cuda", None), id="cuda"))
    return params


@pytest.fixture(params=_backend_params())
def backend(request) -> Iterator[str]:
    """Forces one backend (and SIMD level for native) for the test; skips it where unavailable. Yields the device
    the test should put its inputs on."""
    name, level = request.param
    reason = backend_unavailable_reason(name)
    if reason is not None:
        pytest.skip(f"{name} backend unavailable: {reason}")
    device = "cuda" if name == "cuda" else "cpu"
    with fd.use_backend(name), (simd_level(level) if level else contextlib.nullcontext()):
        yield device


@pytest.fixture
def gen() -> torch.Generator:
    """A fresh random generator per test (seeded from the test's own randomness, printed on failure)."""
    seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    print(f"seed={seed}")
    return torch.Generator().manual_seed(seed)
