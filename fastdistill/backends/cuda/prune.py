"""Pruning kernels backed by ``fastdistill._cuda`` (see csrc/cuda/prune.cu)."""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from ... import _cuda
from ..._dispatch import register_kernel
from .._magnitude import FLOAT_DTYPES as DTYPES
from .._magnitude import register_magnitude_kernels

_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def _nm_supports(x: Tensor, n: int, m: int) -> Optional[str]:
    return None if m <= 64 else f"m={m} > 64 (the CUDA N:M kernel handles groups of up to 64)"


def _run(xs: List[Tensor], k: int, masks: Optional[List[Tensor]], inplace: bool) -> int:
    device = xs[0].device if xs else torch.device("cuda")
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream().cuda_stream
        key, _, _ = _cuda.magnitude_prune(
            [x.data_ptr() for x in xs], [x.numel() for x in xs], [_CODE[x.dtype] for x in xs], k,
            None if masks is None else [m.data_ptr() for m in masks], inplace, stream)
    return key


register_magnitude_kernels("cuda", _run, devices=("cuda",))


@register_kernel("nm_mask", "cuda", devices=("cuda",), dtypes=DTYPES, supports=_nm_supports)
def nm_mask(x: Tensor, n: int, m: int) -> Tensor:
    mask = torch.empty(x.shape, dtype=torch.bool, device=x.device)
    with torch.cuda.device(x.device):
        _cuda.nm_mask(x.data_ptr(), x.numel(), _CODE[x.dtype], n, m, mask.data_ptr(),
                      torch.cuda.current_stream().cuda_stream)
    return mask
