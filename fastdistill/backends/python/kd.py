"""Reference knowledge-distillation loss in plain torch, written for clarity (closed-form gradients; the tests check
them against autograd in float64).

With q = softmax(s / T) (student), p = softmax(t / T) (teacher; or p = exp(t) when the teacher is given as
log-probabilities), per row:

* kl:          D = sum p (log p - log q)                 dD/d(s/T) = q - p
* reverse_kl:  D = sum q (log q - log p)                 dD/d(s/T) = q (log q - log p - D)
* jsd:         D = beta KL(p || m) + (1 - beta) KL(q || m),  m = beta p + (1 - beta) q
                                                         dD/d(s/T) = (1 - beta) q (log q - log m - KL(q || m))
* row loss = alpha T^2 w D + (1 - alpha) CE(s, y), so d/ds = alpha T w dD/d(s/T) + (1 - alpha) (softmax(s) - onehot(y)),
  with w = 1, or for weighting "info_entropy" w_r = u_r N / sum u over the N rows that count, u_r = 1 - H(p_r) / log V.

Terms with a zero probability factor count as 0 (0 log 0 = 0); a NaN one gives NaN.

Evaluation (dense teacher): every sum above is of first-order terms (log p - log q ~ |t - s| / T) adding up to a
second-order result (D ~ 1 / T^2 at large T, while the loss alpha T^2 D stays finite). Computed from
``log_softmax`` outputs even in float64, the rounding of the normalisers (~1e-16 of log V) shifts every
log p_j - log q_j by a constant and D by as much: 1e-4 relative at T = 1e6. So the log-ratio is formed as
``r'_j = (t_j - max t) / T - (s_j - max s) / T - (log z_t - log z_s)`` (exact up to a constant c; the maxima
subtracted first, so that a logit of 1e30 does not swallow the others) and the constant is
recovered from sum q = 1: ``c = log1p(B / P)``, ``B = sum_j p'_j expm1(-r'_j)`` (each term q'_j - p'_j to full
relative precision), ``P = sum_j p'_j``; then ``r = r' + c`` and every divergence and gradient follows from ``r``,
p and q, with log1p / expm1 forms for the JSD mixture. Exact to ~1e-12 relative at any temperature (the fp32
native kernel switches to the same evaluation in double above T = 10).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..._dispatch import register_kernel

DIVERGENCES = ("kl", "reverse_kl", "jsd", "none")


def _xlogy_diff(w: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """w * (a - b), 0 where w == 0 (even if a - b is infinite); NaN where w is NaN (NaN in, NaN out)."""
    return torch.where(w == 0, torch.zeros((), dtype=w.dtype, device=w.device), w * (a - b))


def _log_mix(rho: Tensor, beta: float) -> Tensor:
    """log(beta + (1 - beta) e^rho) (= log m - log p for rho = log q - log p), without overflow or cancellation."""
    return torch.where(rho > 0.5, rho + torch.log1p(beta * torch.expm1(-rho)),
                       torch.log1p((1 - beta) * torch.expm1(rho)))


def _shifted(x: Tensor, T: float) -> Tuple[Tensor, Tensor]:
    """((x - max x) / T, log sum exp of it) per row: log_softmax(x / T) is their difference."""
    a = (x - x.amax(-1, keepdim=True)) / T
    return a, torch.logsumexp(a, -1, keepdim=True)


def _divergence(s: Tensor, t: Tensor, temperature: float, divergence: str, beta: float,
                teacher_log_probs: bool) -> Tuple[Tensor, Tensor]:
    """(D, dD/d(s/T)) per row of the float64 (rows, V) logits, evaluated as the module docstring says."""
    T = temperature
    a_s, lz_s = _shifted(s, T)
    ls = a_s - lz_s
    if teacher_log_probs:  # p as given (not renormalised): p' = p
        a_t, lz_t = t, torch.zeros_like(lz_s)
    else:
        a_t, lz_t = _shifted(t, T)
    lp = a_t - lz_t
    r = a_t - a_s - (lz_t - lz_s)  # log p' - log q', each shifted by its max first (a logit of 1e30 keeps the rest)
    p = lp.exp()
    P = p.sum(-1, keepdim=True)
    B = torch.where(-r > 0.5, ls.exp() - p, p * torch.expm1(-r)).sum(-1, keepdim=True)  # sum q' - p'
    cs = torch.log(P + B)  # log sum exp(ls): the rounding in the student's normaliser
    if teacher_log_probs:
        c, w = cs, torch.ones_like(P)
    else:
        c, w = torch.log1p(B / P), 1 / P
    q = (ls - cs).exp()
    r = r + c  # log p - log q, exact
    p = p * w
    if divergence == "kl":
        d = _xlogy_diff(p, r, 0).sum(-1)
        return d, q - p
    rho = -r  # log q - log p
    if divergence == "reverse_kl":
        d = _xlogy_diff(q, rho, 0).sum(-1)
        return d, _xlogy_diff(q, rho, d[:, None])
    lq_m = -_log_mix(-rho, 1 - beta)  # log q - log m
    kl_q = _xlogy_diff(q, lq_m, 0).sum(-1)
    d = beta * _xlogy_diff(p, -_log_mix(rho, beta), 0).sum(-1) + (1 - beta) * kl_q
    return d, (1 - beta) * _xlogy_diff(q, lq_m, kl_q[:, None])


@register_kernel("kd_loss", "python", devices=("cpu", "cuda"))
def kd_loss(student: Tensor, teacher: Optional[Tensor], target: Optional[Tensor], temperature: float, alpha: float,
            divergence: str, beta: float, ignore_index: int, scale: float, teacher_log_probs: bool,
            weighting: str, compute_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """(row_loss, grad): unscaled per-row losses (float32, float64 for float64 inputs) and scale * their gradient
    w.r.t. the (rows, V) student logits, in the student's dtype (None unless compute_grad). Computed in float64:
    this is the ground truth."""
    acc = torch.float64
    s = student.to(acc)
    T = temperature
    loss = torch.zeros(s.shape[0], dtype=acc, device=s.device)
    grad = torch.zeros_like(s)
    if divergence != "none":
        t = teacher.to(acc)
        d, dd = _divergence(s, t, T, divergence, beta, teacher_log_probs)
        if weighting == "info_entropy":
            lp = t if teacher_log_probs else torch.log_softmax(t / T, dim=-1)
            w = _info_entropy_weights(-_xlogy_diff(lp.exp(), lp, 0.0).sum(-1), target, ignore_index, s.shape[1])
            d, dd = w * d, w[:, None] * dd
        loss = loss + alpha * T * T * d
        grad = grad + alpha * T * dd
    return _with_cross_entropy(student, s, loss, grad, target, alpha, ignore_index, scale, compute_grad)


def _info_entropy_weights(entropy: Tensor, target: Optional[Tensor], ignore_index: int, V: int) -> Tensor:
    """w_r = u_r N / sum u (0 if sum u = 0) over the N rows that count, u_r = 1 - H_r / log V clamped to [0, 1]."""
    u = (1 - entropy / math.log(V)).clamp(0, 1) if V > 1 else torch.ones_like(entropy)
    if target is not None:
        u = torch.where(target != ignore_index, u, 0.0)
        n = int((target != ignore_index).sum())
    else:
        n = u.shape[0]
    total = float(u.sum())
    return u * (n / total) if total > 0 else torch.zeros_like(u)


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
