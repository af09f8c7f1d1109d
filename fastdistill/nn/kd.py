"""Loss modules over :func:`fastdistill.kd_loss` and :func:`fastdistill.fused_linear_kd_loss`."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..fused_linear_kd import fused_linear_kd_loss
from ..kd import WEIGHTINGS, check_divergence, check_options, kd_loss


class _KDOptions(torch.nn.Module):
    """Holds (and validates once) the options shared by the distillation losses."""

    def __init__(self, temperature: float, alpha: float, divergence: str, beta: float, ignore_index: int,
                 reduction: str):
        super().__init__()
        self.divergence, self.beta = check_divergence(divergence, beta)
        self.temperature, self.alpha, self.reduction = check_options(temperature, alpha, ignore_index, reduction)
        self.ignore_index = int(ignore_index)

    def _options(self) -> dict:
        return dict(temperature=self.temperature, alpha=self.alpha, divergence=self.divergence, beta=self.beta,
                    ignore_index=self.ignore_index, reduction=self.reduction)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._options().items())


class KDLoss(_KDOptions):
    """Module form of :func:`fastdistill.kd_loss` (same options, same formulas).

    Example::

        >>> criterion = fastdistill.nn.KDLoss(temperature=2.0, alpha=0.5)
        >>> s = torch.randn(8, 100, requires_grad=True)
        >>> loss = criterion(s, torch.randn(8, 100), torch.randint(0, 100, (8,)))
        >>> loss.backward()
    """

    def __init__(self, temperature: float = 1.0, alpha: float = 0.5, divergence: str = "kl", beta: float = 0.5,
                 ignore_index: int = -100, reduction: str = "batchmean", teacher_log_probs: bool = False,
                 weighting: str = "none"):
        super().__init__(temperature, alpha, divergence, beta, ignore_index, reduction)
        if not isinstance(teacher_log_probs, bool):
            raise TypeError(f"teacher_log_probs: expected a bool, got {type(teacher_log_probs).__name__}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting: expected one of {WEIGHTINGS}, got {weighting!r}")
        self.teacher_log_probs, self.weighting = teacher_log_probs, weighting

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Optional[Tensor] = None) -> Tensor:
        return kd_loss(student_logits, teacher_logits, target, teacher_log_probs=self.teacher_log_probs,
                       weighting=self.weighting, **self._options())

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", weighting={self.weighting!r}" if self.weighting != "none" else "")


class FusedLinearKDLoss(_KDOptions):
    """Module form of :func:`fastdistill.fused_linear_kd_loss`: the distillation loss of two LM heads, computed
    chunk by chunk from the hidden states (the heads' weights are passed to ``forward``, as they belong to the
    models).

    Example::

        >>> criterion = fastdistill.nn.FusedLinearKDLoss(temperature=2.0, alpha=0.5)
        >>> student_head, teacher_head = torch.nn.Linear(32, 1000), torch.nn.Linear(48, 1000)
        >>> hs, ht = torch.randn(64, 32, requires_grad=True), torch.randn(64, 48)
        >>> y = torch.randint(0, 1000, (64,))
        >>> loss = criterion(hs, student_head.weight, ht, teacher_head.weight, y,
        ...                  student_bias=student_head.bias, teacher_bias=teacher_head.bias)
        >>> loss.backward()
    """

    def __init__(self, temperature: float = 1.0, alpha: float = 0.5, divergence: str = "kl", beta: float = 0.5,
                 ignore_index: int = -100, reduction: str = "batchmean", chunk_size: Optional[int] = None):
        super().__init__(temperature, alpha, divergence, beta, ignore_index, reduction)
        self.chunk_size = chunk_size

    def forward(self, student_hidden: Tensor, student_weight: Tensor, teacher_hidden: Tensor, teacher_weight: Tensor,
                target: Optional[Tensor] = None, *, student_bias: Optional[Tensor] = None,
                teacher_bias: Optional[Tensor] = None) -> Tensor:
        return fused_linear_kd_loss(student_hidden, student_weight, teacher_hidden, teacher_weight, target,
                                    student_bias=student_bias, teacher_bias=teacher_bias, chunk_size=self.chunk_size,
                                    **self._options())
