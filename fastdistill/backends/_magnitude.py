"""Registers a backend's three magnitude-selection kernels around one `run(xs, k, masks, inplace) -> key` function
(the native, Numba and CUDA backends differ only in that function)."""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor

from .._dispatch import register_kernel
from ._buffers import key_to_float

Run = Callable[[List[Tensor], int, Optional[List[Tensor]], bool], int]
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def register_magnitude_kernels(backend: str, run: Run, devices: Sequence[str] = ("cpu",)) -> None:
    def new_mask(x: Tensor) -> Tensor:
        return torch.empty(x.shape, dtype=torch.bool, device=x.device)

    @register_kernel("magnitude_threshold", backend, devices=devices, dtypes=FLOAT_DTYPES)
    def magnitude_threshold(xs: List[Tensor], k: int) -> Tensor:
        device = xs[0].device if xs else None
        return torch.tensor(key_to_float(run(xs, k, None, False), k), dtype=torch.float32, device=device)

    @register_kernel("magnitude_masks", backend, devices=devices, dtypes=FLOAT_DTYPES)
    def magnitude_masks(xs: List[Tensor], k: int) -> List[Tensor]:
        masks = [new_mask(x) for x in xs]
        run(xs, k, masks, False)
        return masks

    @register_kernel("magnitude_prune_", backend, devices=devices, dtypes=FLOAT_DTYPES)
    def magnitude_prune_(x: Tensor, k: int) -> Tensor:
        mask = new_mask(x)
        run([x], k, [mask], True)
        return mask
