"""CSR matmul backed by ``fastdistill._C`` (see csrc/cpu/sparse*.cpp)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ... import _C
from ..._dispatch import register_kernel
from .._buffers import float_array
from .._csr import linear_reason, spmm_reason


def _array(t: Optional[Tensor]) -> Optional[np.ndarray]:
    return None if t is None else t.detach().numpy()


@register_kernel("sparse_linear", "native", supports=linear_reason)
def sparse_linear(x: Tensor, indptr: Tensor, indices: Tensor, values: Tensor, n_cols: int,
                  bias: Optional[Tensor], scale: Optional[Tensor] = None) -> Tensor:
    out = torch.empty((x.shape[0], indptr.numel() - 1), dtype=torch.float32)
    _C.sparse_matmul(indptr.numpy(), indices.numpy(), float_array(values), n_cols, x.detach().numpy(), False,
                     out.numpy(), False, bias=_array(bias), scale=_array(scale),
                     nthreads=torch.get_num_threads())
    return out


@register_kernel("spmm", "native", supports=spmm_reason)
def spmm(indptr: Tensor, indices: Tensor, values: Tensor, n_cols: int, b: Tensor,
         scale: Optional[Tensor] = None) -> Tensor:
    out = torch.empty((indptr.numel() - 1, b.shape[1]), dtype=torch.float32)
    _C.sparse_matmul(indptr.numpy(), indices.numpy(), float_array(values), n_cols, b.detach().numpy(), True,
                     out.numpy(), True, scale=_array(scale), nthreads=torch.get_num_threads())
    return out
