"""Numba twin of the native knowledge-distillation kernel (csrc/cpu/kd_kernels.h): per row, the log-softmax
normalisers, then the divergence with the gradient written in the same pass (KL) or in one more pass (reverse KL,
JSD, whose gradients need the row's divergence); rows in parallel with ``prange``. Computes in float64; serves
float32 and float64 inputs (bf16/fp16 go to the native or reference backends)."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from ..._dispatch import register_kernel

DTYPES = (torch.float32, torch.float64)
_DIV = {"kl": 0, "reverse_kl": 1, "jsd": 2, "none": 3}


@njit(cache=True, inline="always")
def _log_norm(x, k):
    """(m, lz) with log softmax(x * k)_j = (x_j - m) * k - lz."""
    m = -np.inf
    for v in x:
        if v > m:
            m = v
    z = 0.0
    for v in x:
        z += math.exp((v - m) * k)
    return m, math.log(z)


@njit(cache=True, inline="always")
def _log_mixture(lp, lq, beta):
    """log(beta e^lp + (1 - beta) e^lq) with the larger term factored out."""
    big = max(lp, lq)
    return big + math.log(beta * math.exp(lp - big) + (1.0 - beta) * math.exp(lq - big))


@njit(cache=True, parallel=True)
def _kd_rows(s, t, target, has_target, temperature, alpha, div, beta, ignore_index, scale, t_logp, grad, has_grad,
             row_loss):
    rows, V = s.shape
    inv_t = 1.0 / temperature
    for r in prange(rows):
        y = target[r] if has_target else -1
        if has_target and y == ignore_index:
            row_loss[r] = 0.0
            if has_grad:
                grad[r, :] = 0.0
            continue
        ce = y >= 0 and alpha < 1.0
        sr = s[r]
        tr = t[r]
        sm, slz = _log_norm(sr, inv_t)
        s1m, s1k, s1lz = sm, inv_t, slz
        if ce and temperature != 1.0:
            s1m, s1lz = _log_norm(sr, 1.0)
            s1k = 1.0
        tm, tk, tlz = 0.0, 1.0, 0.0
        if div != 3 and not t_logp:
            tm, tlz = _log_norm(tr, inv_t)
            tk = inv_t
        ckd = scale * alpha * temperature * ((1.0 - beta) if div == 2 else 1.0)
        cce = scale * (1.0 - alpha) if ce else 0.0
        d = 0.0
        kl_q = 0.0
        for j in range(V):
            ls = (sr[j] - sm) * inv_t - slz
            lp = (tr[j] - tm) * tk - tlz
            if div == 0:
                p = math.exp(lp)
                if p > 0.0:
                    d += p * (lp - ls)
            elif div == 1:
                q = math.exp(ls)
                if q > 0.0:
                    d += q * (ls - lp)
            elif div == 2:
                lm = _log_mixture(lp, ls, beta)
                p = math.exp(lp)
                q = math.exp(ls)
                if p > 0.0:
                    d += beta * p * (lp - lm)
                if q > 0.0:
                    kl_q += q * (ls - lm)
        if div == 2:
            d += (1.0 - beta) * kl_q
        if has_grad:
            for j in range(V):
                ls = (sr[j] - sm) * inv_t - slz
                lp = (tr[j] - tm) * tk - tlz
                q = math.exp(ls)
                g = cce * math.exp((sr[j] - s1m) * s1k - s1lz)
                if div == 0:
                    g += ckd * (q - math.exp(lp))
                elif div == 1 and q > 0.0:
                    g += ckd * q * ((ls - lp) - d)
                elif div == 2 and q > 0.0:
                    g += ckd * q * ((ls - _log_mixture(lp, ls, beta)) - kl_q)
                grad[r, j] = g
            if ce:
                grad[r, y] -= cce
        loss = alpha * temperature * temperature * d
        if ce:
            loss += (1.0 - alpha) * (s1lz - (sr[y] - s1m) * s1k)
        row_loss[r] = loss


def _supports(student: Tensor, teacher: Optional[Tensor], *args) -> Optional[str]:
    if student.dtype not in DTYPES:
        return f"student dtype {student.dtype} not supported (supports float32, float64)"
    if teacher is not None and teacher.dtype != student.dtype:
        return f"teacher dtype {teacher.dtype} differs from the student's {student.dtype}"
    return None


@register_kernel("kd_loss", "numba", supports=_supports)
def kd_loss(student: Tensor, teacher: Optional[Tensor], target: Optional[Tensor], temperature: float, alpha: float,
            divergence: str, beta: float, ignore_index: int, scale: float, teacher_log_probs: bool,
            compute_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    rows, V = student.shape
    loss_dtype = torch.float64 if student.dtype == torch.float64 else torch.float32
    row_loss = torch.empty(rows, dtype=loss_dtype)
    grad = torch.empty(student.shape, dtype=student.dtype) if compute_grad else None
    s = student.detach().numpy()
    t = s if teacher is None else teacher.detach().numpy()
    y = np.empty(0, np.int64) if target is None else target.numpy()
    g = np.empty((0, V), s.dtype) if grad is None else grad.numpy()
    _kd_rows(s, t, y, target is not None, float(temperature), float(alpha), _DIV[divergence], float(beta),
             int(ignore_index), float(scale), bool(teacher_log_probs), g, grad is not None, row_loss.numpy())
    return row_loss, grad
