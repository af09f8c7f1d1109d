"""Pruning kernels backed by ``fastdistill._C`` (see csrc/cpu/prune*.cpp)."""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from ... import _C
from ..._dispatch import register_kernel
from .._buffers import float_array
from .._magnitude import FLOAT_DTYPES as DTYPES
from .._magnitude import register_magnitude_kernels


def _nm_supports(x: Tensor, n: int, m: int) -> Optional[str]:
    return None if m <= 64 else f"m={m} > 64 (the native N:M kernel handles groups of up to 64)"


def _run(xs: List[Tensor], k: int, masks: Optional[List[Tensor]], inplace: bool) -> int:
    arrays = [float_array(x) for x in xs]
    mask_arrays = None if masks is None else [m.numpy() for m in masks]
    return _C.magnitude_prune(arrays, k, mask_arrays, inplace, torch.get_num_threads())[0]


register_magnitude_kernels("native", _run)


@register_kernel("nm_mask", "native", dtypes=DTYPES, supports=_nm_supports)
def nm_mask(x: Tensor, n: int, m: int) -> Tensor:
    mask = torch.empty(x.shape, dtype=torch.bool)
    _C.nm_mask(float_array(x), n, m, mask.numpy(), torch.get_num_threads())
    return mask
