"""Numba twin of the int8 kernels: int8 products summed in integers and wrapped to int32 (the same modular result
as the native int32 accumulators), and the same per-row quantization rule as the reference."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from ..._dispatch import register_kernel


@njit(cache=True, parallel=True)
def _mm(a, bt, out):
    """out[i, j] = sum_k a[i, k] * bt[j, k] (a: M x K, bt: N x K), wrapped to int32."""
    m, k = a.shape
    n = bt.shape[0]
    for idx in prange(m * n):
        i = idx // n
        j = idx % n
        acc = np.int64(0)
        for t in range(k):
            acc += np.int64(a[i, t]) * np.int64(bt[j, t])
        out[i, j] = np.int32(acc)  # truncation: the int32 wrap-around of the native accumulators


@njit(cache=True, parallel=True)
def _quantize_rows(x, q, scale):
    m, k = x.shape
    for i in prange(m):
        absmax = np.float32(0.0)
        for t in range(k):
            absmax = max(absmax, abs(x[i, t]))
        s = np.float32(absmax / np.float32(127.0))
        scale[i] = s
        div = np.float32(1.0) if s == 0 else s
        for t in range(k):
            v = np.rint(np.float32(x[i, t] / div))
            q[i, t] = np.int8(min(max(v, np.float32(-127.0)), np.float32(127.0)))


@njit(cache=True, parallel=True)
def _dequantize(acc, row_scale, wscale, bias, has_bias, out):
    m, n = acc.shape
    for i in prange(m):
        for j in range(n):
            v = np.float32(acc[i, j]) * row_scale[i] * wscale[j]
            out[i, j] = v + bias[j] if has_bias else v


@register_kernel("int8_mm", "numba")
def int8_mm(a: Tensor, b: Tensor) -> Tensor:
    out = np.empty((a.shape[0], b.shape[1]), np.int32)
    _mm(a.numpy(), np.ascontiguousarray(b.numpy().T), out)
    return torch.from_numpy(out)


@register_kernel("int8_mm_packed", "numba")
def int8_mm_packed(a: Tensor, codes: Tensor, packed: Tensor, comp: Tensor) -> Tensor:
    out = np.empty((a.shape[0], codes.shape[0]), np.int32)
    _mm(a.numpy(), codes.numpy(), out)
    return torch.from_numpy(out)


@register_kernel("int8_linear", "numba")
def int8_linear(x: Tensor, codes: Tensor, wscale: Tensor, packed: Tensor, comp: Tensor,
                bias: Optional[Tensor]) -> Tensor:
    xf = x.detach().float().numpy()
    m, n = xf.shape[0], codes.shape[0]
    q = np.empty(xf.shape, np.int8)
    scale = np.empty(m, np.float32)
    _quantize_rows(xf, q, scale)
    acc = np.empty((m, n), np.int32)
    _mm(q, codes.numpy(), acc)
    out = np.empty((m, n), np.float32)
    b = np.zeros(0, np.float32) if bias is None else bias.detach().numpy()
    _dequantize(acc, scale, wscale.detach().numpy(), b, bias is not None, out)
    return torch.from_numpy(out)
