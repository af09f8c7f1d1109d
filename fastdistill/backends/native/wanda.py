"""Wanda masks backed by ``fastdistill._C`` (see csrc/cpu/wanda*.cpp): score and per-row selection in one kernel."""
from __future__ import annotations

import torch
from torch import Tensor

from ... import _C
from ..._dispatch import register_kernel
from .._buffers import float_array


@register_kernel("wanda_mask", "native", dtypes=(torch.float32, torch.float16, torch.bfloat16))
def wanda_mask(w: Tensor, norms: Tensor, k: int) -> Tensor:
    mask = torch.empty(w.shape, dtype=torch.bool)
    w = w.float() if w.dtype == torch.float16 else w  # exact; the kernel reads fp32 and bf16
    _C.wanda_mask(float_array(w), norms.numpy(), k, mask.numpy(), torch.get_num_threads())
    return mask
