"""Reference knowledge-distillation loss in plain torch, written for clarity (closed-form gradients; the tests check
them against autograd in float64).

With q = softmax(s / T) (student), p = softmax(t / T) (teacher; or p = exp(t) when the teacher is given as
log-probabilities), per row:

* kl:          D = sum p (log p - log q)                 dD/d(s/T) = q - p
* reverse_kl:  D = sum q (log q - log p)                 dD/d(s/T) = q (log q - log p - D)
* jsd:         D = beta KL(p || m) + (1 - beta) KL(q || m),  m = beta p + (1 - beta) q
                                                         dD/d(s/T) = (1 - beta) q (log q - log m - KL(q || m))
* row loss = alpha T^2 D + (1 - alpha) CE(s, y), so d/ds = alpha T dD/d(s/T) + (1 - alpha) (softmax(s) - onehot(y)).

Terms with a zero probability factor count as 0 (0 log 0 = 0).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..._dispatch import register_kernel

DIVERGENCES = ("kl", "reverse_kl", "jsd", "none")


def _xlogy_diff(w: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """w * (a - b), 0 where w == 0 (even if a - b is infinite)."""
    return torch.where(w > 0, w * (a - b), torch.zeros((), dtype=w.dtype, device=w.device))


@register_kernel("kd_loss", "python", devices=("cpu", "cuda"))
def kd_loss(student: Tensor, teacher: Optional[Tensor], target: Optional[Tensor], temperature: float, alpha: float,
            divergence: str, beta: float, ignore_index: int, scale: float, teacher_log_probs: bool,
            compute_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """(row_loss, grad): unscaled per-row losses (float32, float64 for float64 inputs) and scale * their gradient
    w.r.t. the (rows, V) student logits, in the student's dtype (None unless compute_grad). Computed in float64:
    this is the ground truth, and log q - log p loses ~1e-5 to cancellation in fp32 for logits of scale 30."""
    acc = torch.float64
    s = student.to(acc)
    T = temperature
    ls = torch.log_softmax(s / T, dim=-1)
    q = ls.exp()
    loss = torch.zeros(s.shape[0], dtype=acc, device=s.device)
    grad = torch.zeros_like(s)
    if divergence != "none":
        lp = teacher.to(acc) if teacher_log_probs else torch.log_softmax(teacher.to(acc) / T, dim=-1)
        p = lp.exp()
        if divergence == "kl":
            d = _xlogy_diff(p, lp, ls).sum(-1)
            dd = q - p
        elif divergence == "reverse_kl":
            d = _xlogy_diff(q, ls, lp).sum(-1)
            dd = _xlogy_diff(q, ls - lp, d[:, None])
        else:
            lm = torch.logaddexp(lp + math.log(beta), ls + math.log1p(-beta))
            kl_q = _xlogy_diff(q, ls, lm).sum(-1)
            d = beta * _xlogy_diff(p, lp, lm).sum(-1) + (1 - beta) * kl_q
            dd = (1 - beta) * _xlogy_diff(q, ls - lm, kl_q[:, None])
        loss = loss + alpha * T * T * d
        grad = grad + alpha * T * dd
    valid = torch.ones(s.shape[0], dtype=torch.bool, device=s.device)
    if target is not None:
        valid = target != ignore_index
        if alpha < 1:
            y = torch.where(valid, target, 0)
            ls1 = torch.log_softmax(s, dim=-1)
            loss = loss - (1 - alpha) * ls1.gather(1, y[:, None])[:, 0]
            grad = grad + (1 - alpha) * (ls1.exp() - torch.nn.functional.one_hot(y, s.shape[1]).to(acc))
    loss = torch.where(valid, loss, 0.0).to(torch.float64 if student.dtype == torch.float64 else torch.float32)
    if not compute_grad:
        return loss, None
    return loss, (torch.where(valid[:, None], grad, 0.0) * scale).to(student.dtype)
