"""The output-level distillation losses a :class:`~fastdistill.distill.Distiller` can be given by name.

With ``q = softmax(s / T)`` (student), ``p = softmax(t / T)`` (teacher) and ``CE`` the cross-entropy on the labels
(at temperature 1), each loss is, per row, ``alpha * T^2 * D + (1 - alpha) * CE``, where ``D`` is:

* ``"entropy"``:        ``KL(p || q) = sum_j p_j log(p_j / q_j)`` (Hinton's soft targets);
* ``"info_entropy"``:   ``w * KL(p || q)`` with ``w = 1 - H(p) / log V`` (the teacher's confidence), normalised
  to mean 1 over the batch: rows the teacher is unsure of teach less;
* ``"entropy_sparse"``: the teacher's top-k with one tail bucket,
  ``sum_{j in top-k} p_j log(p_j / q_j) + p_b log(p_b / q_b)`` (``p_b``, ``q_b``: the mass outside the top-k):
  what an offline :class:`~fastdistill.distill.TeacherCache` stores;
* ``"jsd"``:            ``JSD(p, q) = (KL(p || m) + KL(q || m)) / 2``, ``m = (p + q) / 2`` (bounded, symmetric);
* ``"reverse_kl"``:     ``KL(q || p)`` (mode-seeking: the student concentrates on the teacher's main modes).

For models whose outputs are embeddings rather than logits: ``"cosine"`` (``1 - cos(s, t)`` averaged over rows)
and ``"mse"`` (mean squared error); these ignore labels.

Named losses use ``temperature = 4`` and ``alpha = 0.5``; build :class:`fastdistill.nn.KDLoss` or
:class:`SparseKDLoss` for other values.
"""
from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kd import check_options, sparse_kd_loss
from ..nn.kd import KDLoss

TEMPERATURE, ALPHA = 4.0, 0.5

LOSSES: Dict[str, str] = {
    "entropy": "alpha T^2 KL(p_t || p_s) + (1 - alpha) CE: soft targets (Hinton)",
    "info_entropy": "the same, each row's KL weighted by the teacher's confidence 1 - H(p_t) / log V, normalised",
    "entropy_sparse": "the teacher's top-k + a tail bucket through sparse_kd_loss (what a TeacherCache stores)",
    "jsd": "alpha T^2 JSD(p_t, p_s) + (1 - alpha) CE",
    "reverse_kl": "alpha T^2 KL(p_s || p_t) + (1 - alpha) CE",
    "cosine": "1 - cos(student output, teacher output), for embedding outputs",
    "mse": "mean squared error between the outputs, for embedding outputs",
}

LossFn = Callable[..., Tensor]


class SparseTeacher(NamedTuple):
    """A teacher given by its top-k: ``indices`` (..., k) int, ``log_probs`` (..., k) at the loss's temperature,
    normalised over the full vocabulary, and ``tail`` (...) the probability outside the top-k (informational: the
    loss recomputes it from ``log_probs``)."""

    indices: Tensor
    log_probs: Tensor
    tail: Optional[Tensor] = None


class SparseKDLoss(nn.Module):
    """``alpha * T^2 * KL`` against the teacher's top-``top_k`` plus one tail bucket, ``+ (1 - alpha) * CE``:
    :func:`fastdistill.sparse_kd_loss` with ``values="log_probs"``, ``tail="bucket"``.

    ``forward(student_logits, teacher, target)``: ``teacher`` is a :class:`SparseTeacher` (as a
    :class:`~fastdistill.distill.TeacherCache` serves it, written at this loss's temperature) or dense teacher
    logits, whose top-k log-probabilities at temperature ``T`` are taken here.

    Example::

        >>> criterion = SparseKDLoss(temperature=2.0, top_k=16)
        >>> s = torch.randn(8, 1000, requires_grad=True)
        >>> criterion(s, torch.randn(8, 1000), torch.randint(0, 1000, (8,))).backward()
    """

    accepts_sparse_teacher = True

    def __init__(self, temperature: float = TEMPERATURE, alpha: float = ALPHA, top_k: int = 64,
                 ignore_index: int = -100, reduction: str = "batchmean"):
        super().__init__()
        self.temperature, self.alpha, self.reduction = check_options(temperature, alpha, ignore_index, reduction)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k: expected an int >= 1, got {top_k!r}")
        self.top_k, self.ignore_index = top_k, int(ignore_index)

    def forward(self, student_logits: Tensor, teacher: Union[SparseTeacher, Tensor],
                target: Optional[Tensor] = None) -> Tensor:
        if not isinstance(teacher, SparseTeacher):
            lp = torch.log_softmax(teacher.detach().float() / self.temperature, -1)
            top = lp.topk(min(self.top_k, lp.shape[-1]), -1)
            teacher = SparseTeacher(top.indices, top.values)
        return sparse_kd_loss(student_logits, teacher.indices, teacher.log_probs, target, values="log_probs",
                              tail="bucket", temperature=self.temperature, alpha=self.alpha,
                              ignore_index=self.ignore_index, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}, top_k={self.top_k}"


class OutputLoss(nn.Module):
    """``"cosine"`` or ``"mse"`` between student and teacher outputs (embeddings); labels are not used."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, student: Tensor, teacher: Tensor, target: Optional[Tensor] = None) -> Tensor:
        return feature_loss(student, teacher.detach(), self.kind)

    def extra_repr(self) -> str:
        return repr(self.kind)


def feature_loss(s: Tensor, t: Tensor, kind: str, weight: Optional[Tensor] = None) -> Tensor:
    """Mean over rows (the leading dimensions; weighted by ``weight`` of their shape, e.g. an attention mask) of
    ``1 - cos(s, t)`` (``kind="cosine"``) or of the mean squared error over the last dimension (``"mse"``)."""
    if s.shape != t.shape:
        raise ValueError(f"features: student {tuple(s.shape)} and teacher {tuple(t.shape)} differ in shape")
    t = t.to(s.dtype)
    if weight is None and kind == "mse":
        return F.mse_loss(s, t)  # (rows of equal length: the mean of the row means)
    if kind == "cosine":
        per_row = 1.0 - F.cosine_similarity(s, t, dim=-1)
    else:
        per_row = (s - t).pow(2).mean(-1)
    if weight is None:
        return per_row.mean()
    weight = weight.to(per_row.dtype)
    return (per_row * weight).sum() / weight.sum().clamp_min(1.0)


def make_loss(spec: Union[None, str, LossFn]) -> LossFn:
    """The loss a Distiller uses for ``spec``: a name of :data:`LOSSES`, a loss module / callable
    ``(student_out, teacher_out, target) -> loss`` (used as given), or None (``KDLoss(temperature=4, alpha=0.5)``)."""
    if spec is None or spec == "entropy":
        return KDLoss(temperature=TEMPERATURE, alpha=ALPHA)
    if isinstance(spec, str):
        if spec == "info_entropy":
            return KDLoss(temperature=TEMPERATURE, alpha=ALPHA, weighting="info_entropy")
        if spec in ("jsd", "reverse_kl"):
            return KDLoss(temperature=TEMPERATURE, alpha=ALPHA, divergence=spec)
        if spec == "entropy_sparse":
            return SparseKDLoss()
        if spec in ("cosine", "mse"):
            return OutputLoss(spec)
        raise ValueError(f"loss: expected one of {tuple(LOSSES)}, a loss module or a callable, got {spec!r}")
    if callable(spec):
        return spec
    raise TypeError(f"loss: expected a name, a loss module or a callable, got {type(spec).__name__}")
