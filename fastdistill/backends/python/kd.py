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
    return _with_cross_entropy(student, s, loss, grad, target, alpha, ignore_index, scale, compute_grad)


def _with_cross_entropy(student: Tensor, s: Tensor, loss: Tensor, grad: Tensor, target: Optional[Tensor],
                        alpha: float, ignore_index: int, scale: float,
                        compute_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """Adds (1 - alpha) CE(s, target) and its gradient to the float64 (loss, grad), zeroes ignored rows, scales
    the gradient and converts: the (row_loss, grad) a kd kernel returns."""
    acc = s.dtype
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


@register_kernel("sparse_kd_loss", "python", devices=("cpu", "cuda"))
def sparse_kd_loss(student: Tensor, indices: Tensor, values: Tensor, sampling_probs: Optional[Tensor],
                   target: Optional[Tensor], temperature: float, alpha: float, values_kind: str, tail: str,
                   ignore_index: int, scale: float, compute_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """The sparse-teacher loss of :func:`fastdistill.sparse_kd_loss` (formulas there), like :func:`kd_loss`: per-row
    losses and scale * their gradient, in float64. With p_k the teacher's probability of entry k (i_k its index):

    * tail none:    P = p / sum p;  D = sum_k P_k (log P_k - log q_{i_k});        dD/d(s/T) = q - scatter(P)
    * tail bucket:  p_b = 1 - sum p, q_b = sum_{j not in K} q_j;
                    D = sum_k p_k (log p_k - log q_{i_k}) + p_b (log p_b - log q_b);
                    dD/d(s/T) = q (1 - [j not in K] p_b / q_b) - scatter(p)
    * sampled:      w = p / (K r);  D = sum_k w_k (log p_k - log q_{i_k});
                    dD/d(s/T) = (sum w) q - scatter_add(w)
    """
    acc = torch.float64
    s = student.to(acc)
    T = temperature
    ls = torch.log_softmax(s / T, dim=-1)
    q = ls.exp()
    idx = indices.to(torch.int64)
    v = values.to(acc)
    zero = torch.zeros((), dtype=acc, device=s.device)
    if values_kind == "logits":  # a row of -inf logits (all padding) has no distribution: p = 0 there
        lp = torch.where(v.amax(-1, keepdim=True) > -math.inf, torch.log_softmax(v / T, -1), -math.inf)
    else:
        lp = v if values_kind == "log_probs" else v.log()
    p = lp.exp()
    lq = ls.gather(1, idx)
    if sampling_probs is not None:
        w = p / (idx.shape[1] * sampling_probs.to(acc))
        d = _xlogy_diff(w, lp, lq).sum(-1)
        dd = w.sum(-1, keepdim=True) * q - torch.zeros_like(q).scatter_add(1, idx, w)
    elif tail == "none":
        mass = p.sum(-1, keepdim=True)
        p_hat = torch.where(mass > 0, p / mass, zero)
        d = _xlogy_diff(p_hat, lp - mass.log(), lq).sum(-1)
        dd = torch.where(mass > 0, q - torch.zeros_like(q).scatter_add(1, idx, p_hat), zero)
    else:
        in_k = torch.zeros_like(q).scatter_add(1, idx, (p > 0).to(acc)) > 0
        p_b = (1 - p.sum(-1, keepdim=True)).clamp(min=0)
        p_b = torch.where(in_k.all(-1, keepdim=True), zero, p_b)  # no bin left: what p_b holds is rounding
        q_b = torch.where(in_k, zero, q).sum(-1, keepdim=True)
        d = _xlogy_diff(p, lp, lq).sum(-1) + _xlogy_diff(p_b, p_b.log(), q_b.log())[:, 0]
        ratio = torch.where(p_b > 0, p_b / q_b, zero)
        dd = torch.where(in_k, q, q * (1 - ratio)) - torch.zeros_like(q).scatter_add(1, idx, p)
    loss = torch.zeros(s.shape[0], dtype=acc, device=s.device)
    grad = torch.zeros_like(s)
    if alpha > 0:
        loss = loss + alpha * T * T * d
        grad = grad + alpha * T * dd
    return _with_cross_entropy(student, s, loss, grad, target, alpha, ignore_index, scale, compute_grad)
