"""Pruning kernels backed by ``fastdistill._C`` (see csrc/cpu/prune*.cpp)."""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch
from torch import Tensor

from ... import _C
from ..._dispatch import register_kernel
from .._buffers import float_array, key_to_float

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _nm_supports(x: Tensor, n: int, m: int) -> Optional[str]:
    return None if m <= 64 else f"m={m} > 64 (the native N:M kernel handles groups of up to 64)"


def _run(xs: List[Tensor], k: int, masks: Optional[List[Tensor]], inplace: bool):
    arrays = [float_array(x) for x in xs]
    mask_arrays = None if masks is None else [m.numpy() for m in masks]
    return _C.magnitude_prune(arrays, k, mask_arrays, inplace, torch.get_num_threads())


@register_kernel("magnitude_threshold", "native", dtypes=DTYPES)
def magnitude_threshold(xs: List[Tensor], k: int) -> Tensor:
    key = _run(xs, k, None, False)[0]
    return torch.tensor(key_to_float(key, k), dtype=torch.float32)


@register_kernel("magnitude_masks", "native", dtypes=DTYPES)
def magnitude_masks(xs: List[Tensor], k: int) -> List[Tensor]:
    masks = [torch.empty(x.shape, dtype=torch.bool) for x in xs]
    _run(xs, k, masks, False)
    return masks


@register_kernel("magnitude_prune_", "native", dtypes=DTYPES)
def magnitude_prune_(x: Tensor, k: int) -> Tensor:
    mask = torch.empty(x.shape, dtype=torch.bool)
    _run([x], k, [mask], True)
    return mask


@register_kernel("nm_mask", "native", dtypes=DTYPES, supports=_nm_supports)
def nm_mask(x: Tensor, n: int, m: int) -> Tensor:
    mask = torch.empty(x.shape, dtype=torch.bool)
    _C.nm_mask(float_array(x), n, m, mask.numpy(), torch.get_num_threads())
    return mask
