"""Knowledge-distillation losses with the student's gradient computed in the forward pass.

``kd_loss`` is Hinton's soft-target loss plus the usual hard-target cross-entropy, fused: one kernel reads the
student and teacher logits, writes the per-row losses and the gradient w.r.t. the student logits; backward only
scales that gradient by the incoming one (and skips even that when it is 1, as for ``loss.backward()``). No other
logits-sized buffer is allocated: peak extra memory is the gradient itself (1.0x the logits in the student's dtype),
where the usual ``F.kl_div(F.log_softmax(...), ...)`` + ``F.cross_entropy`` expression holds about five.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple

import numpy as np
import torch

from . import _ops
from ._convert import ArrayLike, check_float, to_tensor

DIVERGENCES = ("kl", "reverse_kl", "jsd")
REDUCTIONS = ("batchmean", "mean", "sum", "none")


def _real(value: object, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    return float(value)


def _choice(value: object, choices: tuple, name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
    return value  # type: ignore[return-value]


def check_kd_options(temperature: object, alpha: object, divergence: object, beta: object, reduction: object,
                     ignore_index: object) -> Tuple[float, float, str, float, str]:
    """Validated (temperature, alpha, divergence, beta, reduction) of the distillation losses."""
    temperature = _real(temperature, "temperature")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature: expected a finite value > 0, got {temperature}")
    alpha = _real(alpha, "alpha")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
    divergence = _choice(divergence, DIVERGENCES, "divergence")
    beta = _real(beta, "beta")
    if divergence == "jsd" and not 0.0 < beta < 1.0:
        raise ValueError(f"beta: expected a value in (0, 1) for divergence='jsd', got {beta}")
    reduction = _choice(reduction, REDUCTIONS, "reduction")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index: expected an int, got {type(ignore_index).__name__}")
    return temperature, alpha, divergence, beta, reduction


def check_target(target: Optional[ArrayLike], shape: torch.Size, num_classes: int, device: torch.device,
                 ignore_index: int, alpha: float) -> Optional[torch.Tensor]:
    """``target`` as int64 class indices of ``shape`` on ``device`` (None stays None; then alpha must be > 0)."""
    if target is None:
        if alpha == 0.0:
            raise ValueError("alpha: 0 leaves only the cross-entropy term, which needs a target")
        return None
    y = to_tensor(target, "target")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"target: expected an integer tensor of class indices, got {y.dtype}")
    if y.shape != shape:
        raise ValueError(f"target: expected shape {tuple(shape)}, got {tuple(y.shape)}")
    y = y.to(device=device, dtype=torch.int64)
    bad = (y != ignore_index) & ((y < 0) | (y >= num_classes))
    if bool(bad.any()):
        value = int(y[bad][0])
        raise ValueError(f"target: class index {value} is out of range [0, {num_classes}) and is not "
                         f"ignore_index ({ignore_index})")
    return y


def kd_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    target: Optional[ArrayLike] = None,
    *,
    temperature: float = 1.0,
    alpha: float = 0.5,
    divergence: str = "kl",
    beta: float = 0.5,
    ignore_index: int = -100,
    reduction: str = "batchmean",
    teacher_log_probs: bool = False,
) -> ArrayLike:
    r"""Distillation loss ``alpha * T^2 * D(p_t || p_s) + (1 - alpha) * CE(student_logits, target)`` per row.

    ``p_s = softmax(student_logits / T)``, ``p_t = softmax(teacher_logits / T)`` (or ``exp(teacher_logits)`` when
    ``teacher_log_probs``: the teacher is then taken as already-tempered log-probabilities and used as given), and
    the cross-entropy is at temperature 1. Rows are the leading dimensions: inputs are ``(B, V)`` or ``(B, T, V)``.

    * ``divergence="kl"``: ``KL(p_t || p_s)``; ``"reverse_kl"``: ``KL(p_s || p_t)``; ``"jsd"``: the generalised
      Jensen-Shannon divergence ``beta * KL(p_t || m) + (1 - beta) * KL(p_s || m)`` with
      ``m = beta * p_t + (1 - beta) * p_s``, ``0 < beta < 1`` (``beta = 0.5`` is the symmetric JSD).
    * ``target``: class indices of shape ``student_logits.shape[:-1]``, or None (no CE term: distillation on
      unlabeled data; then ``alpha`` must be > 0). Rows whose target is ``ignore_index`` contribute nothing: loss
      0, gradient 0, for both terms.
    * Reductions, with ``l_r`` the loss of row ``r`` (0 for ignored rows) and ``N`` the number of rows not ignored:
      ``"sum"``: ``sum_r l_r``; ``"batchmean"`` (default): ``sum_r l_r / student_logits.shape[0]`` - as
      ``F.kl_div(reduction="batchmean")``, so for ``(B, T, V)`` inputs it divides by ``B``, and ignored rows still
      count in the divisor; ``"mean"``: ``sum_r l_r / N`` - as ``F.cross_entropy(reduction="mean")``, the mean over
      tokens (0, not NaN, when every row is ignored); ``"none"``: the ``l_r`` with shape ``shape[:-1]``.
      For ``(B, V)`` inputs without ignored rows, batchmean and mean agree and equal ``F.kl_div(..., "batchmean")
      * alpha * T**2 + (1 - alpha) * F.cross_entropy(...)``.
    * The loss is float32 (float64 for float64 inputs), accumulated in fp32 (row sums in fp64) also for fp16 and
      bf16 inputs; the gradient flows to ``student_logits`` only (the teacher is treated as detached) and has its
      dtype. Teacher and student may have different float dtypes.
    * Zero-probability terms count as 0 (``0 log 0 = 0``): ``-inf`` teacher logits (masked vocabulary) are fine.

    Numpy inputs give a numpy float result (no gradient). The gradient is only computed when autograd needs it
    (``student_logits.requires_grad`` and grad mode on); otherwise the call is a cheaper, loss-only pass.

    Example::

        >>> s = torch.randn(8, 100, requires_grad=True)
        >>> t, y = torch.randn(8, 100), torch.randint(0, 100, (8,))
        >>> loss = fastdistill.kd_loss(s, t, y, temperature=2.0, alpha=0.5)
        >>> loss.backward()
        >>> s.grad.shape
        torch.Size([8, 100])
    """
    s = to_tensor(student_logits, "student_logits")
    t = to_tensor(teacher_logits, "teacher_logits")
    check_float(s, "student_logits")
    check_float(t, "teacher_logits")
    if s.dim() not in (2, 3):
        raise ValueError(f"student_logits: expected shape (B, V) or (B, T, V), got {tuple(s.shape)}")
    if t.shape != s.shape:
        raise ValueError(f"teacher_logits: expected the student's shape {tuple(s.shape)}, got {tuple(t.shape)}")
    if t.device != s.device:
        raise ValueError(f"teacher_logits: expected device {s.device}, got {t.device}")
    if s.shape[-1] == 0:
        raise ValueError("student_logits: expected at least one class (last dimension >= 1)")
    temperature, alpha, divergence, beta, reduction = check_kd_options(temperature, alpha, divergence, beta,
                                                                       reduction, ignore_index)
    if not isinstance(teacher_log_probs, bool):
        raise TypeError(f"teacher_log_probs: expected a bool, got {type(teacher_log_probs).__name__}")
    y = check_target(target, s.shape[:-1], s.shape[-1], s.device, ignore_index, alpha)
    compute_grad = torch.is_grad_enabled() and s.requires_grad
    loss = _ops.kd_loss(s, t.detach(), y, temperature, alpha, divergence, beta, int(ignore_index), reduction,
                        teacher_log_probs, compute_grad)[0]
    if isinstance(student_logits, np.ndarray):
        return loss.numpy() if reduction == "none" else loss.numpy()[()]
    return loss
