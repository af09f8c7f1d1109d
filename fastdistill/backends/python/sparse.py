"""Reference CSR matmul in plain torch: the weight becomes a ``torch.sparse_csr`` tensor (after the same checks as
the native kernel; int8 values dequantized first, code times row scale in fp32) and torch multiplies; fp32
accumulation (fp64 for fp64 inputs)."""
from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import Tensor

from ..._dispatch import register_kernel
from ...formats.csr import check_components, check_scale, columns, dequantized

DEVICES = ("cpu", "cuda")


def _matmul(indptr: Tensor, indices: Tensor, values: Tensor, n_cols: int, b: Tensor, scale: Optional[Tensor]) -> Tensor:
    """W @ b for b (n_cols, M) in b's accumulation dtype."""
    cols = columns(indices)
    check_components(indptr, cols, values, n_cols)
    check_scale(values, scale, indptr.numel() - 1)
    acc = torch.float64 if b.dtype == torch.float64 else torch.float32
    vals = values if scale is None else dequantized(indptr, values, scale)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        w = torch.sparse_csr_tensor(indptr, cols, vals.to(acc), size=(indptr.numel() - 1, n_cols))
        return w @ b.to(acc)


@register_kernel("sparse_linear", "python", devices=DEVICES)
def sparse_linear(x: Tensor, indptr: Tensor, indices: Tensor, values: Tensor, n_cols: int,
                  bias: Optional[Tensor], scale: Optional[Tensor] = None) -> Tensor:
    out = _matmul(indptr, indices, values, n_cols, x.t(), scale).t()
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out.to(x.dtype).contiguous()


@register_kernel("spmm", "python", devices=DEVICES)
def spmm(indptr: Tensor, indices: Tensor, values: Tensor, n_cols: int, b: Tensor,
         scale: Optional[Tensor] = None) -> Tensor:
    return _matmul(indptr, indices, values, n_cols, b, scale).to(b.dtype).contiguous()
