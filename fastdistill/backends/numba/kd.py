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


_IGNORED = -(2**62)


@njit(cache=True, inline="always")
def _row_target(target, has_target, ignore_index, r, row_loss, grad, has_grad):
    """Row r's target (-1 without targets); _IGNORED, with the row's loss and gradient zeroed, when it is
    ignore_index."""
    y = target[r] if has_target else -1
    if has_target and y == ignore_index:
        row_loss[r] = 0.0
        if has_grad:
            grad[r, :] = 0.0
        return _IGNORED
    return y


@njit(cache=True, inline="always")
def _student_norms(sr, inv_t, ce):
    """(m, lz) of log softmax(sr / T), and (m1, k1, lz1) of the cross-entropy's at T = 1 (the same when T = 1 or
    there is no cross-entropy term)."""
    sm, slz = _log_norm(sr, inv_t)
    if ce and inv_t != 1.0:
        s1m, s1lz = _log_norm(sr, 1.0)
        return sm, slz, s1m, 1.0, s1lz
    return sm, slz, sm, inv_t, slz


@njit(cache=True, parallel=True)
def _kd_rows(s, t, target, has_target, temperature, alpha, div, beta, ignore_index, scale, t_logp, grad, has_grad,
             row_loss):
    rows, V = s.shape
    inv_t = 1.0 / temperature
    for r in prange(rows):
        y = _row_target(target, has_target, ignore_index, r, row_loss, grad, has_grad)
        if y == _IGNORED:
            continue
        ce = y >= 0 and alpha < 1.0
        sr = s[r]
        tr = t[r]
        sm, slz, s1m, s1k, s1lz = _student_norms(sr, inv_t, ce)
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


def _check_classes(a: np.ndarray, V: int, name: str, ignore_index: Optional[int] = None) -> np.ndarray:
    """``a`` (int64) after checking that its entries index a row of V (or equal ignore_index): the kernels below
    index with them unchecked, and the public functions' own checks are skipped under torch.compile."""
    live = a if ignore_index is None else a[a != ignore_index]
    if live.size and (int(live.min()) < 0 or int(live.max()) >= V):
        bad = int(live.min()) if int(live.min()) < 0 else int(live.max())
        raise ValueError(f"{name}: entry {bad} is out of range [0, {V})")
    return a


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
    y = np.empty(0, np.int64) if target is None else _check_classes(target.numpy(), V, "target", ignore_index)
    g = np.empty((0, V), s.dtype) if grad is None else grad.numpy()
    _kd_rows(s, t, y, target is not None, float(temperature), float(alpha), _DIV[divergence], float(beta),
             int(ignore_index), float(scale), bool(teacher_log_probs), g, grad is not None, row_loss.numpy())
    return row_loss, grad


_SPARSE_KIND = {"logits": 0, "log_probs": 1, "probs": 2}


@njit(cache=True, parallel=True)
def _sparse_kd_rows(s, idx, val, sprobs, has_sprobs, target, has_target, temperature, alpha, kind, bucket,
                    ignore_index, scale, grad, has_grad, row_loss):
    """Twin of sparse_kd_rows in csrc/cpu/kd_kernels.h, in float64, where the student's tail mass q_b is summed
    over the row directly."""
    rows, V = s.shape
    K = idx.shape[1]
    inv_t = 1.0 / temperature
    for r in prange(rows):
        y = _row_target(target, has_target, ignore_index, r, row_loss, grad, has_grad)
        if y == _IGNORED:
            continue
        ce = y >= 0 and alpha < 1.0
        sr = s[r]
        # the teacher's entries with p > 0: index, log p, and p (the weight p / (K r) when sampled)
        lse = 0.0
        if kind == 0:  # NaN when every entry is -inf: then no entry has p > 0
            vm, vlz = _log_norm(val[r], inv_t)
            lse = vm * inv_t + vlz
        js = np.empty(K, np.int64)
        lps = np.empty(K)
        ws = np.empty(K)
        n = 0
        mass = 0.0
        for k in range(K):
            v = val[r, k]
            if kind == 0:
                lp = v * inv_t - lse
            elif kind == 1:
                lp = v
            else:
                lp = math.log(v) if v > 0.0 else -np.inf
            p = math.exp(lp)
            if not p > 0.0:
                continue
            js[n] = idx[r, k]
            lps[n] = lp
            ws[n] = p / (K * sprobs[r, k]) if has_sprobs else p
            mass += ws[n]
            n += 1
        sm, slz, s1m, s1k, s1lz = _student_norms(sr, inv_t, ce)
        d = 0.0
        cq = 1.0
        ratio = 0.0  # p_b / q_b
        for k in range(n):
            if not has_sprobs and not bucket:
                ws[k] /= mass
                lps[k] -= math.log(mass)
            d += ws[k] * (lps[k] - ((sr[js[k]] - sm) * inv_t - slz))
        if has_sprobs:
            cq = mass
        elif not bucket:
            cq = 1.0 if n > 0 else 0.0
        else:
            holes = np.unique(js[:n])
            q_b = 0.0
            h = 0
            for j in range(V):
                if h < holes.shape[0] and holes[h] == j:
                    h += 1
                    continue
                q_b += math.exp((sr[j] - sm) * inv_t - slz)
            p_b = max(0.0, 1.0 - mass) if holes.shape[0] < V else 0.0
            if p_b > 0.0:
                d += p_b * (math.log(p_b) - math.log(q_b)) if q_b > 0.0 else np.inf
                ratio = p_b / q_b if q_b > 0.0 else np.inf
        loss = alpha * temperature * temperature * d if alpha > 0.0 else 0.0
        if ce:
            loss += (1.0 - alpha) * (s1lz - (sr[y] - s1m) * s1k)
        row_loss[r] = loss
        if not has_grad:
            continue
        ckd = scale * alpha * temperature
        cce = scale * (1.0 - alpha) if ce else 0.0
        for j in range(V):
            q = math.exp((sr[j] - sm) * inv_t - slz)
            grad[r, j] = ckd * q * (cq - ratio) + cce * math.exp((sr[j] - s1m) * s1k - s1lz)
        if alpha > 0.0:
            for k in range(n):
                j = js[k]
                if has_sprobs:
                    grad[r, j] -= ckd * ws[k]
                else:  # set, not corrected: q (cq - ratio) may be huge where q_b underflows; q_j - p_j is not
                    q = math.exp((sr[j] - sm) * inv_t - slz)
                    grad[r, j] = ckd * (q - ws[k]) + cce * math.exp((sr[j] - s1m) * s1k - s1lz)
        if ce:
            grad[r, y] -= cce


@register_kernel("sparse_kd_loss", "numba", supports=lambda student, *args: _supports(student, None))
def sparse_kd_loss(student: Tensor, indices: Tensor, values: Tensor, sampling_probs: Optional[Tensor],
                   target: Optional[Tensor], temperature: float, alpha: float, values_kind: str, tail: str,
                   ignore_index: int, scale: float, compute_grad: bool) -> Tuple[Tensor, Optional[Tensor]]:
    rows, V = student.shape
    row_loss = torch.empty(rows, dtype=torch.float64 if student.dtype == torch.float64 else torch.float32)
    grad = torch.empty(student.shape, dtype=student.dtype) if compute_grad else None
    s = student.detach().numpy()
    val = values.detach().to(torch.float64).numpy()
    r = val if sampling_probs is None else sampling_probs.to(torch.float64).numpy()
    y = np.empty(0, np.int64) if target is None else _check_classes(target.numpy(), V, "target", ignore_index)
    g = np.empty((0, V), s.dtype) if grad is None else grad.numpy()
    idx = _check_classes(indices.to(torch.int64).numpy(), V, "indices")
    _sparse_kd_rows(s, idx, val, r, sampling_probs is not None, y, target is not None,
                    float(temperature), float(alpha), _SPARSE_KIND[values_kind], tail == "bucket", int(ignore_index),
                    float(scale), g, grad is not None, row_loss.numpy())
    return row_loss, grad
