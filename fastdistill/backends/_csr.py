"""What the CPU CSR-matmul kernels (native, Numba) accept: shared by both, one floor below the backends."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..formats.csr import INDEX_DTYPES, VALUE_DTYPES


def cpu_kernel_reason(x: Tensor, indptr: Tensor, indices: Tensor, values: Tensor, bias: Optional[Tensor]) -> Optional[str]:
    """None if a float32-activation CPU kernel serves these inputs, else why not."""
    if x.dtype != torch.float32:
        return f"x dtype {x.dtype} not supported (float32 only)"
    if indptr.dtype != torch.int64 or indices.dtype not in INDEX_DTYPES or values.dtype not in VALUE_DTYPES:
        return (f"CSR dtypes ({indptr.dtype}, {indices.dtype}, {values.dtype}) not supported "
                "(int64, int16/int32, float32/bfloat16/int8)")
    if bias is not None and bias.dtype != torch.float32:
        return f"bias dtype {bias.dtype} not supported (float32 only)"
    return None


def linear_reason(x, indptr, indices, values, n_cols, bias, scale=None) -> Optional[str]:
    return cpu_kernel_reason(x, indptr, indices, values, bias)


def spmm_reason(indptr, indices, values, n_cols, b, scale=None) -> Optional[str]:
    return cpu_kernel_reason(b, indptr, indices, values, None)
