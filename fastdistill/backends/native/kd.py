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


WEIGHTING_CODES = {"none": 0, "info_entropy": 1}


@register_kernel("kd_loss", "native", supports=_supports)
def kd_loss(student: Tensor, teacher: Optional[Tensor], target: Optional[Tensor], temperature: float, alpha: float,
            divergence: str, beta: float, ignore_index: int, scale: float, teacher_log_probs: bool,
            weighting: str, compute_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    row_loss = torch.empty(student.shape[0], dtype=torch.float32)
    grad = torch.empty(student.shape, dtype=student.dtype) if compute_grad else None
    _C.kd_loss(float_array(student), None if teacher is None else float_array(teacher),
               None if target is None else target.numpy(), temperature, alpha, DIVERGENCE_CODES[divergence], beta,
               ignore_index, scale, teacher_log_probs, None if grad is None else float_array(grad), row_loss.numpy(),
               torch.get_num_threads(), WEIGHTING_CODES[weighting])
    return row_loss, grad


SPARSE_VALUE_CODES = {"logits": 0, "log_probs": 1, "probs": 2}


def _supports_sparse(student: Tensor, *args) -> Optional[str]:
    return _supports(student, None)


@register_kernel("sparse_kd_loss", "native", supports=_supports_sparse)
def sparse_kd_loss(student: Tensor, indices: Tensor, values: Tensor, sampling_probs: Optional[Tensor],
                   target: Optional[Tensor], temperature: float, alpha: float, values_kind: str, tail: str,
                   ignore_index: int, scale: float, compute_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    # The (rows, K) teacher arrays are small: converted to what the kernel reads (int64, float32) here.
    row_loss = torch.empty(student.shape[0], dtype=torch.float32)
    grad = torch.empty(student.shape, dtype=student.dtype) if compute_grad else None
    r = None if sampling_probs is None else sampling_probs.to(torch.float32).numpy()
    _C.sparse_kd_loss(float_array(student), indices.to(torch.int64).numpy(), values.to(torch.float32).numpy(), r,
                      None if target is None else target.numpy(), temperature, alpha,
                      SPARSE_VALUE_CODES[values_kind], tail == "bucket", ignore_index, scale,
                      None if grad is None else float_array(grad), row_loss.numpy(), torch.get_num_threads())
    return row_loss, grad
