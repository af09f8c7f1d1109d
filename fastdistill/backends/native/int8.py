"""int8 GEMM and dynamic-quantization linear layer backed by ``fastdistill._C`` (see csrc/cpu/int8*.cpp).

``int8_linear`` runs its own fused kernel (quantization, GEMM and dequantization epilogue in one call) unless this
CPU measured ``torch._int_mm`` (oneDNN) faster for large batches: then, from the measured row count on, the same
quantization and epilogue run around ``torch._int_mm``. The choice comes from :func:`int_mm_min_rows`, a small
measurement made once per process, SIMD level and thread count, not from a constant: on a Xeon with AMX our AMX
kernel won at every batch size, on a Zen 5 (AVX-512 VNNI) our VNNI kernel ran 480 GMAC/s per core against oneDNN's
390, and on an AVX2-only EPYC ``_int_mm`` took 10.4 s for a 2048^3 product that our kernel does in 106 ms.
"""
from __future__ import annotations

import time
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ... import _C
from ..._dispatch import register_kernel
from ..._timing import best_ms
from .._buffers import float_array

# The route probe: a K x N weight, batches of increasing rows. A first single call of the _int_mm route that takes
# PROBE_GIVE_UP times our kernel's time ends the probe at once (a CPU without a fast oneDNN int8 path must not pay
# seconds for the measurement), and so does PROBE_BUDGET_MS of probing; otherwise each side is its fastest of five
# calls. Until _int_mm is measured faster, our kernel serves.
PROBE_K = PROBE_N = 512
PROBE_ROWS = (64, 256, 1024)
PROBE_GIVE_UP = 3.0
PROBE_MARGIN = 0.9  # _int_mm must be at least 10% faster to take over (the fused kernel keeps the data in cache)
PROBE_BUDGET_MS = 150.0

_ROUTES: Dict[Tuple[str, int], dict] = {}


def packed_sizes(k: int, n: int) -> Tuple[int, int]:
    """Sizes of the packed weight (bytes) and of its compensation vector (int32) for a K x N matrix."""
    return _C.int8_packed_sizes(k, n)


@register_kernel("int8_pack", "native")
def pack(b: Tensor) -> Tuple[Tensor, Tensor]:
    """b (K x N int8, any strides) in the kernel's panel layout, and its compensation vector."""
    size, csize = packed_sizes(*b.shape)
    packed = torch.empty(size, dtype=torch.int8)
    comp = torch.empty(csize, dtype=torch.int32)
    _C.int8_pack(b.detach().numpy(), packed.numpy(), comp.numpy(), torch.get_num_threads())
    return packed, comp


def _packed_reason(codes: Tensor, packed: Tensor, comp: Tensor) -> Optional[str]:
    if (packed.numel(), comp.numel()) != packed_sizes(codes.shape[1], codes.shape[0]):
        return "the weight was not prepacked for the native kernel (prepack it where the native backend is built)"
    return None


def _linear_supports(x: Tensor, codes: Tensor, wscale: Tensor, packed: Tensor, comp: Tensor,
                     bias: Optional[Tensor]) -> Optional[str]:
    if x.dtype not in (torch.float32, torch.bfloat16):
        return f"x dtype {x.dtype} not supported (float32, bfloat16)"
    return _packed_reason(codes, packed, comp)


@register_kernel("int8_mm", "native")
def int8_mm(a: Tensor, b: Tensor) -> Tensor:
    packed, comp = pack(b)
    out = torch.empty(a.shape[0], b.shape[1], dtype=torch.int32)
    _C.int8_gemm(a.numpy(), packed.numpy(), comp.numpy(), b.shape[1], out.numpy(), torch.get_num_threads())
    return out


@register_kernel("int8_mm_packed", "native",
                 supports=lambda a, codes, packed, comp: _packed_reason(codes, packed, comp))
def int8_mm_packed(a: Tensor, codes: Tensor, packed: Tensor, comp: Tensor) -> Tensor:
    out = torch.empty(a.shape[0], codes.shape[0], dtype=torch.int32)
    _C.int8_gemm(a.numpy(), packed.numpy(), comp.numpy(), codes.shape[0], out.numpy(), torch.get_num_threads())
    return out


def _int_mm_linear(x: Tensor, codes: Tensor, wscale: Tensor, bias: Optional[Tensor]) -> Tensor:
    """int8_linear with the GEMM in torch._int_mm: our row quantization and dequantization epilogue around it."""
    m, n = x.shape[0], codes.shape[0]
    out = torch.empty(m, n, dtype=torch.float32)
    nthreads = torch.get_num_threads()
    q = torch.empty(x.shape, dtype=torch.int8)
    scale = torch.empty(m, dtype=torch.float32)
    _C.int8_quantize_rows(float_array(x), q.numpy(), scale.numpy(), nthreads)
    acc = torch._int_mm(q, codes.t())
    bias_np = None if bias is None else bias.detach().numpy()
    _C.int8_dequantize(acc.numpy(), scale.numpy(), wscale.detach().numpy(), bias_np, out.numpy(), nthreads)
    return out


def _probe() -> dict:
    """Times the fused kernel and the _int_mm route on a PROBE_K x PROBE_N weight at PROBE_ROWS batches."""
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(-127, 128, (PROBE_N, PROBE_K), generator=g, dtype=torch.int8)
    wscale = torch.rand(PROBE_N, generator=g)
    packed, comp = pack(codes.t())
    weight = (packed.numpy(), comp.numpy(), wscale.numpy())
    try:  # oneDNN's first call builds its kernels: keep that out of the timings (a tiny shape, cheap everywhere)
        _int_mm_linear(torch.randn(32, 64, generator=g), codes[:64, :64].contiguous(), wscale[:64], None)
    except RuntimeError as exc:  # torch._int_mm unavailable or refusing these shapes on this build
        return {"int_mm_min_rows": None, "reason": f"torch._int_mm failed: {exc}"}
    timings: Dict[int, Tuple[float, float]] = {}  # rows -> (ours, the _int_mm route) in ms
    start = time.perf_counter()

    for m in PROBE_ROWS:
        if (time.perf_counter() - start) * 1e3 > PROBE_BUDGET_MS:
            break
        x = torch.randn(m, PROBE_K, generator=g)
        ours_ms = best_ms(lambda: linear_prepacked(x, weight, None))
        t0 = time.perf_counter()
        _int_mm_linear(x, codes, wscale, None)
        first_ms = (time.perf_counter() - t0) * 1e3
        if first_ms > PROBE_GIVE_UP * ours_ms:
            timings[m] = (ours_ms, first_ms)
            break
        timings[m] = (ours_ms, best_ms(lambda: _int_mm_linear(x, codes, wscale, None)))
        if timings[m][1] < PROBE_MARGIN * ours_ms:
            return {"int_mm_min_rows": m, "timings_ms": timings}
    return {"int_mm_min_rows": None, "timings_ms": timings}


def int8_route() -> dict:
    """How ``int8_linear`` splits its work on this CPU now: ``{"int_mm_min_rows": rows from which torch._int_mm
    runs the GEMM, or None (our kernel at every batch size), ...}``, measured once per SIMD level and thread count.

    At a SIMD level forced below the CPU's (``FASTDISTILL_SIMD``, ``set_simd_level``) our kernels always run: a
    forced level stands for a CPU of that level, and oneDNN would keep its own best paths here, so measuring it
    would say nothing about such a CPU.
    """
    level = _C.simd_level()
    if level != _C.detected_simd_level():
        return {"int_mm_min_rows": None, "reason": f"SIMD level forced to {level}: own kernels only"}
    key = (level, torch.get_num_threads())
    if key not in _ROUTES:
        _ROUTES[key] = _probe()
    return _ROUTES[key]


def int_mm_min_rows() -> Optional[int]:
    """Rows from which ``int8_linear`` hands its GEMM to ``torch._int_mm`` here (None: never); see :func:`int8_route`."""
    return int8_route()["int_mm_min_rows"]


@register_kernel("int8_linear", "native", supports=_linear_supports)
def int8_linear(x: Tensor, codes: Tensor, wscale: Tensor, packed: Tensor, comp: Tensor,
                bias: Optional[Tensor]) -> Tensor:
    m = x.shape[0]
    if m >= PROBE_ROWS[0] and codes.shape[1] > 0:
        rows = int_mm_min_rows()
        if rows is not None and m >= rows:
            return _int_mm_linear(x, codes, wscale, bias)
    return linear_prepacked(x, (packed.numpy(), comp.numpy(), wscale.detach().numpy()), bias)


def linear_prepacked(x: Tensor, weight: Tuple[np.ndarray, np.ndarray, np.ndarray], bias: Optional[Tensor]) -> Tensor:
    """The fused kernel on a contiguous fp32/bf16 CPU ``x`` (M x K) and the numpy views (packed, comp, scale) of a
    prepacked weight."""
    out = torch.empty(x.shape[0], weight[2].shape[0], dtype=torch.float32)
    _C.int8_linear(float_array(x), weight[0], weight[1], weight[2], None if bias is None else bias.detach().numpy(),
                   out.numpy(), torch.get_num_threads())
    return out
