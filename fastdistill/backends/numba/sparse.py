"""Numba twin of the native CSR matmul: rows in parallel (``prange``), a gather dot product per sample for small
batches, a contiguous AXPY of a feature-major copy of x for larger ones (see csrc/cpu/sparse_kernels.h). int8
values are read as codes and each row's sum multiplied by its scale (ones for float values)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from ..._dispatch import register_kernel
from ...formats.csr import check_components, check_scale, columns
from .._csr import linear_reason, spmm_reason

_GATHER_MAX_BATCH = 3  # as the native kernel (csrc/cpu/sparse.cpp)


@njit(cache=True, parallel=True)
def _gather(indptr, cols, vals, scale, x, bias, out):
    """out[m, n] = bias[n] + scale[n] * sum_j vals[j] * x[m, cols[j]] (x sample-major)."""
    for n in prange(indptr.size - 1):
        for m in range(x.shape[0]):
            s = np.float32(0.0)
            for j in range(indptr[n], indptr[n + 1]):
                s += np.float32(vals[j]) * x[m, cols[j]]
            out[m, n] = s * scale[n] + bias[n]


@njit(cache=True, parallel=True)
def _axpy(indptr, cols, vals, scale, xt, bias, out):
    """out[n, :] = bias[n] + scale[n] * sum_j vals[j] * xt[cols[j], :] (xt feature-major; out rows-major)."""
    for n in prange(indptr.size - 1):
        acc = np.zeros(xt.shape[1], dtype=np.float32)
        for j in range(indptr[n], indptr[n + 1]):
            v = np.float32(vals[j])
            row = xt[cols[j]]
            for m in range(acc.size):
                acc[m] += v * row[m]
        for m in range(acc.size):
            out[n, m] = acc[m] * scale[n] + bias[n]


def _run(x: Tensor, feature_major: bool, indptr: Tensor, indices: Tensor, values: Tensor, n_cols: int,
         bias: Optional[Tensor], scale: Optional[Tensor]) -> Tensor:
    """(rows, M) result for x given (cols, M) when feature_major else (M, cols)."""
    rows = indptr.numel() - 1
    check_components(indptr, columns(indices), values, n_cols)
    check_scale(values, scale, rows)
    cols = indices.numpy().view(np.uint16) if indices.dtype == torch.int16 else indices.numpy()
    vals = values.numpy() if values.dtype == torch.int8 else values.float().numpy()
    sc = np.ones(rows, np.float32) if scale is None else scale.detach().numpy()
    b = np.zeros(rows, np.float32) if bias is None else bias.detach().numpy()
    xa = x.detach().numpy()
    batch = xa.shape[1] if feature_major else xa.shape[0]
    if batch <= _GATHER_MAX_BATCH:
        out = np.empty((batch, rows), np.float32)
        _gather(indptr.numpy(), cols, vals, sc, np.ascontiguousarray(xa.T) if feature_major else xa, b, out)
        return torch.from_numpy(out).t()
    out = np.empty((rows, batch), np.float32)
    _axpy(indptr.numpy(), cols, vals, sc, xa if feature_major else np.ascontiguousarray(xa.T), b, out)
    return torch.from_numpy(out)


@register_kernel("sparse_linear", "numba", supports=linear_reason)
def sparse_linear(x: Tensor, indptr: Tensor, indices: Tensor, values: Tensor, n_cols: int,
                  bias: Optional[Tensor], scale: Optional[Tensor] = None) -> Tensor:
    return _run(x, False, indptr, indices, values, n_cols, bias, scale).t().contiguous()


@register_kernel("spmm", "numba", supports=spmm_reason)
def spmm(indptr: Tensor, indices: Tensor, values: Tensor, n_cols: int, b: Tensor,
         scale: Optional[Tensor] = None) -> Tensor:
    return _run(b, True, indptr, indices, values, n_cols, None, scale).contiguous()
