"""int8 GEMM and dynamic-quantization linear layer backed by ``fastdistill._C`` (see csrc/cpu/int8*.cpp).

``int8_linear`` runs its own kernel (quantization, GEMM and dequantization epilogue in one call), except when the
batch has ``INT_MM_MIN_ROWS`` rows or more and our kernel would be VNNI (no AMX): then the same quantization and
epilogue run around ``torch._int_mm`` (oneDNN, which uses AMX where the OS lets it). Measured on a 2-core Xeon with
AMX, weights 1024x1024 and 4096x1024: our AMX kernel with its fused epilogue beats the ``_int_mm`` route at every M
from 1 to 1024 (e.g. 0.27 vs 0.39 ms at M=16, 1.1 vs 1.3 ms at M=128 for 4096x1024); with AMX switched off our VNNI
kernel wins below 64 rows and ``_int_mm`` (on AMX) from 128 rows on.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ... import _C
from ..._dispatch import register_kernel
from .._buffers import float_array

PANEL = _C.INT8_PANEL
INT_MM_MIN_ROWS = 64


def packed_sizes(k: int, n: int) -> Tuple[int, int]:
    """Sizes of the packed weight (bytes) and of its compensation vector (int32) for a K x N matrix."""
    panels = (n + PANEL - 1) // PANEL
    return panels * ((k + 63) // 64 * 16) * PANEL * 4, panels * PANEL


@register_kernel("int8_pack", "native")
def pack(b: Tensor) -> Tuple[Tensor, Tensor]:
    """b (K x N int8, any strides) in the kernel's panel layout, and its shift compensation."""
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


def fused_kernel_serves(m: int) -> bool:
    """Whether ``int8_linear`` on ``m`` rows runs our fused kernel (else the ``_int_mm`` route, see above)."""
    return m < INT_MM_MIN_ROWS or _C.int8_amx_in_use(m)


@register_kernel("int8_linear", "native", supports=_linear_supports)
def int8_linear(x: Tensor, codes: Tensor, wscale: Tensor, packed: Tensor, comp: Tensor,
                bias: Optional[Tensor]) -> Tensor:
    m, n = x.shape[0], codes.shape[0]
    if fused_kernel_serves(m) or codes.shape[1] == 0:
        return linear_prepacked(x, (packed.numpy(), comp.numpy(), wscale.detach().numpy()), bias)
    out = torch.empty(m, n, dtype=torch.float32)
    nthreads = torch.get_num_threads()
    q = torch.empty(x.shape, dtype=torch.int8)
    scale = torch.empty(m, dtype=torch.float32)
    _C.int8_quantize_rows(float_array(x), q.numpy(), scale.numpy(), nthreads)
    acc = torch._int_mm(q, codes.t())
    bias_np = None if bias is None else bias.detach().numpy()
    _C.int8_dequantize(acc.numpy(), scale.numpy(), wscale.detach().numpy(), bias_np, out.numpy(), nthreads)
    return out


def linear_prepacked(x: Tensor, weight: Tuple[np.ndarray, np.ndarray, np.ndarray], bias: Optional[Tensor]) -> Tensor:
    """The fused kernel on a contiguous fp32/bf16 CPU ``x`` (M x K) and the numpy views (packed, comp, scale) of a
    prepacked weight; :func:`fastdistill.int8.linear_checked` calls it directly where :func:`fused_kernel_serves`."""
    out = torch.empty(x.shape[0], weight[2].shape[0], dtype=torch.float32)
    _C.int8_linear(float_array(x), weight[0], weight[1], weight[2], None if bias is None else bias.detach().numpy(),
                   out.numpy(), torch.get_num_threads())
    return out
