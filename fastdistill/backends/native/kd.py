"""Knowledge-distillation loss backed by ``fastdistill._C`` (see csrc/cpu/kd*.cpp)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ... import _C
from ..._dispatch import register_kernel
from .._buffers import float_array

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
DIVERGENCE_CODES = {"kl": 0, "reverse_kl": 1, "jsd": 2, "none": 3}


def _supports(student: Tensor, teacher: Optional[Tensor], *args) -> Optional[str]:
    for name, x in (("student", student), ("teacher", teacher)):
        if x is not None and x.dtype not in DTYPES:
            return f"{name} dtype {x.dtype} not supported (supports float32, float16, bfloat16)"
    return None


@register_kernel("kd_loss", "native", supports=_supports)
def kd_loss(student: Tensor, teacher: Optional[Tensor], target: Optional[Tensor], temperature: float, alpha: float,
            divergence: str, beta: float, ignore_index: int, scale: float, teacher_log_probs: bool,
            compute_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    row_loss = torch.empty(student.shape[0], dtype=torch.float32)
    grad = torch.empty(student.shape, dtype=student.dtype) if compute_grad else None
    _C.kd_loss(float_array(student), None if teacher is None else float_array(teacher),
               None if target is None else target.numpy(), temperature, alpha, DIVERGENCE_CODES[divergence], beta,
               ignore_index, scale, teacher_log_probs, None if grad is None else float_array(grad), row_loss.numpy(),
               torch.get_num_threads())
    return row_loss, grad
