"""Zero-copy views of contiguous CPU tensors as numpy arrays for the native and Numba kernels."""
from __future__ import annotations

import numpy as np
import torch


def float_array(x: torch.Tensor) -> np.ndarray:
    """numpy view of a contiguous CPU float tensor; bfloat16 (which numpy lacks) is viewed as its uint16 bits."""
    if x.dtype == torch.bfloat16:
        return x.detach().view(torch.uint16).numpy()
    return x.detach().numpy()


def key_to_float(key: int, k: int) -> float:
    """The magnitude a kernel's fp32 bit-pattern key stands for; -inf when nothing is pruned (k == 0)."""
    if k == 0:
        return float("-inf")
    return float(np.array([key], dtype=np.uint32).view(np.float32)[0])
