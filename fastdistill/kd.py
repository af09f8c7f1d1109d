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
SPARSE_VALUES = ("logits", "log_probs", "probs")
SPARSE_TAILS = ("none", "bucket")


def _real(value: object, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    return float(value)


def _choice(value: object, choices: tuple, name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
    return value  # type: ignore[return-value]


def _student(student_logits: ArrayLike) -> torch.Tensor:
    s = to_tensor(student_logits, "student_logits")
    check_float(s, "student_logits")
    if s.dim() not in (2, 3):
        raise ValueError(f"student_logits: expected shape (B, V) or (B, T, V), got {tuple(s.shape)}")
    if s.shape[-1] == 0:
        raise ValueError("student_logits: expected at least one class (last dimension >= 1)")
    return s


def check_options(temperature: object, alpha: object, ignore_index: object,
                  reduction: object) -> Tuple[float, float, str]:
    """The checked (temperature, alpha, reduction) of the distillation losses (and that ignore_index is an int)."""
    temperature = _real(temperature, "temperature")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature: expected a finite value > 0, got {temperature}")
    alpha = _real(alpha, "alpha")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
    reduction = _choice(reduction, REDUCTIONS, "reduction")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index: expected an int, got {type(ignore_index).__name__}")
    return temperature, alpha, reduction


def check_divergence(divergence: object, beta: object) -> Tuple[str, float]:
    """The checked (divergence, beta) of the dense-teacher losses."""
    divergence = _choice(divergence, DIVERGENCES, "divergence")
    beta = _real(beta, "beta")
    if divergence == "jsd" and not 0.0 < beta < 1.0:
        raise ValueError(f"beta: expected a value in (0, 1) for divergence='jsd', got {beta}")
    return divergence, beta


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
    if torch.compiler.is_compiling():  # a check on the values cannot be traced; the kernels clamp or raise
        return y
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
    s = _student(student_logits)
    t = to_tensor(teacher_logits, "teacher_logits")
    check_float(t, "teacher_logits")
    if t.shape != s.shape:
        raise ValueError(f"teacher_logits: expected the student's shape {tuple(s.shape)}, got {tuple(t.shape)}")
    if t.device != s.device:
        raise ValueError(f"teacher_logits: expected device {s.device}, got {t.device}")
    divergence, beta = check_divergence(divergence, beta)
    if not isinstance(teacher_log_probs, bool):
        raise TypeError(f"teacher_log_probs: expected a bool, got {type(teacher_log_probs).__name__}")
    temperature, alpha, reduction = check_options(temperature, alpha, ignore_index, reduction)
    y = check_target(target, s.shape[:-1], s.shape[-1], s.device, ignore_index, alpha)
    compute_grad = torch.is_grad_enabled() and s.requires_grad
    loss = _ops.call("kd_loss", s, t.detach(), y, temperature, alpha, divergence, beta, int(ignore_index),
                     reduction, teacher_log_probs, compute_grad, autograd=compute_grad)[0]
    return _result(loss, student_logits, reduction)


def _result(loss: torch.Tensor, student_logits: ArrayLike, reduction: str) -> ArrayLike:
    if isinstance(student_logits, np.ndarray):
        return loss.numpy() if reduction == "none" else loss.numpy()[()]
    return loss


def sparse_kd_loss(
    student_logits: ArrayLike,
    teacher_indices: ArrayLike,
    teacher_values: ArrayLike,
    target: Optional[ArrayLike] = None,
    *,
    values: str = "logits",
    tail: str = "none",
    sampling_probs: Optional[ArrayLike] = None,
    temperature: float = 1.0,
    alpha: float = 0.5,
    ignore_index: int = -100,
    reduction: str = "batchmean",
) -> ArrayLike:
    r"""Distillation loss ``alpha * T^2 * KL(p_t || q) + (1 - alpha) * CE(student_logits, target)`` per row, with
    the teacher given sparsely: ``K`` entries per row (cached top-k, or importance-sampled draws), as stored for
    offline distillation of large-vocabulary models.

    ``q = softmax(student_logits / T)`` over the full vocabulary ``V``. ``teacher_indices`` (int32/int64, values in
    ``[0, V)``) and ``teacher_values`` (float) have shape ``student_logits.shape[:-1] + (K,)``; per row they give
    entries ``(i_k, v_k)``, ``k = 1..K``. The teacher probability ``p_k`` of entry ``k``:

    * ``values="logits"``: ``p_k = softmax(v / T)_k`` over the row's K entries (renormalised: the tail mass is
      unknown, so only ``tail="none"``);
    * ``values="log_probs"``: ``p_k = exp(v_k)``; ``values="probs"``: ``p_k = v_k``. These are the teacher's
      already-tempered probabilities, normalised over the full vocabulary, used as given (no temperature applied);
      a row's ``sum_k p_k`` must be <= 1 (up to 1e-4, 1e-2 for half-precision values; a small excess is clamped).

    The divergence (forward KL only), with ``lq_j = log q_j``:

    * ``tail="none"`` (default): the target is ``p`` renormalised over the entries, ``P_k = p_k / sum_k p_k``:
      ``D = sum_k P_k (log P_k - lq_{i_k})``, ``dD/d(s/T) = q - scatter(P)``. (Top-k alone is a biased estimate
      of the full KL: the student is pushed to put all of its mass on the K entries.)
    * ``tail="bucket"``: the teacher's remaining mass ``p_b = 1 - sum_k p_k`` and the student's
      ``q_b = sum_{j not in K} q_j`` (summed directly, not as 1 - sum_k q_k) form one extra bin:
      ``D = sum_k p_k (log p_k - lq_{i_k}) + p_b (log p_b - log q_b)``; ``dD/d(s/T)_j = q_j - p_j`` for ``j`` in
      the entries, ``q_j (1 - p_b / q_b)`` for every other ``j`` (``p_b / q_b = 0`` when ``p_b = 0``; ``p_b`` is
      taken as 0 when the entries cover the whole vocabulary, the bin being empty).
    * ``sampling_probs`` given (same shape as the indices, values in ``(0, 1]``): the entries are ``n = K``
      i.i.d. draws (duplicates allowed) from a proposal ``r`` with ``sampling_probs[k] = r(i_k)``, and ``v_k``
      gives the teacher's probability at the drawn index (``values`` "log_probs" or "probs"; ``tail="none"``).
      With weights ``w_k = p_k / (n r_k)``: ``D = sum_k w_k (log p_k - lq_{i_k})``, an unbiased estimate of
      ``KL(p || q)``, and ``dD/d(s/T) = (sum_k w_k) q - scatter_add(w)``, unbiased for ``q - p``. With ``r = p``
      this is random-sampling KD (``w`` = counts / n).

    Entries with ``p_k = 0`` (probs 0, log_probs or logits ``-inf``) are padding: they contribute nothing and do
    not count as entries (``0 log 0 = 0``; for ``tail="bucket"`` their student mass stays in ``q_b``). A row
    whose entries are all padding has no distillation term (0 loss, 0 gradient from it). Without
    ``sampling_probs`` an index may appear only once among a row's non-padding entries (else ValueError).

    The row loss is ``alpha * T^2 * D + (1 - alpha) * CE(s, target)`` (cross-entropy at temperature 1), so
    ``d/ds = alpha * T * dD/d(s/T) + (1 - alpha) * (softmax(s) - onehot(target))``. ``temperature``, ``alpha``,
    ``target``, ``ignore_index`` (ignored rows: loss 0, gradient 0) and ``reduction`` ("batchmean", "mean",
    "sum", "none") mean exactly what they mean for :func:`kd_loss`. The gradient is computed in the forward pass
    (only when autograd needs it) and backward only scales it; nothing else of the logits' size is allocated.
    Student logits may be float32/bfloat16/float16 (accumulated in fp32; the gradient has their dtype) or float64;
    the teacher's values and ``sampling_probs`` may be any float dtype (the native kernel reads them as float32);
    numpy inputs give a numpy result; non-contiguous inputs are fine.

    Example::

        >>> s = torch.randn(8, 32000, requires_grad=True)
        >>> top = torch.randn(8, 32000).log_softmax(-1).topk(64)     # the cached teacher top-64
        >>> loss = fastdistill.sparse_kd_loss(s, top.indices, top.values, values="log_probs", tail="bucket")
        >>> loss.backward()
    """
    s = _student(student_logits)
    values = _choice(values, SPARSE_VALUES, "values")
    tail = _choice(tail, SPARSE_TAILS, "tail")
    idx = to_tensor(teacher_indices, "teacher_indices")
    if idx.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"teacher_indices: expected an int32 or int64 tensor, got {idx.dtype}")
    if idx.dim() != s.dim() or idx.shape[:-1] != s.shape[:-1] or idx.shape[-1] == 0:
        raise ValueError(f"teacher_indices: expected shape {tuple(s.shape[:-1])} + (K,) with K >= 1, got "
                         f"{tuple(idx.shape)}")
    val = to_tensor(teacher_values, "teacher_values")
    check_float(val, "teacher_values")
    for name, x in (("teacher_indices", idx), ("teacher_values", val)):
        if x.device != s.device:
            raise ValueError(f"{name}: expected device {s.device}, got {x.device}")
    if val.shape != idx.shape:
        raise ValueError(f"teacher_values: expected the indices' shape {tuple(idx.shape)}, got {tuple(val.shape)}")
    V = s.shape[-1]
    if values == "logits" and tail != "none":
        raise ValueError("tail: 'bucket' needs the teacher's probabilities (values='log_probs' or 'probs'); with "
                         "values='logits' the tail mass is unknown")
    r = None
    if sampling_probs is not None:
        r = to_tensor(sampling_probs, "sampling_probs")
        check_float(r, "sampling_probs")
        if r.shape != idx.shape or r.device != s.device:
            raise ValueError(f"sampling_probs: expected the indices' shape {tuple(idx.shape)} and device "
                             f"{s.device}, got {tuple(r.shape)} on {r.device}")
        if values == "logits" or tail != "none":
            raise ValueError("sampling_probs: needs values='log_probs' or 'probs' and tail='none'")
        r = r.detach()
    if not torch.compiler.is_compiling():  # checks on the values cannot be traced
        with np.errstate(all="ignore"):  # exp overflow and NaN are what the checks report
            _check_sparse_teacher(idx, val, r, values, V)
    temperature, alpha, reduction = check_options(temperature, alpha, ignore_index, reduction)
    y = check_target(target, s.shape[:-1], V, s.device, ignore_index, alpha)
    compute_grad = torch.is_grad_enabled() and s.requires_grad
    loss = _ops.call("sparse_kd_loss", s, idx, val.detach(), r, y, temperature, alpha, values, tail,
                     int(ignore_index), reduction, compute_grad, autograd=compute_grad)[0]
    return _result(loss, student_logits, reduction)


def _check_sparse_teacher(idx: torch.Tensor, val: torch.Tensor, r: Optional[torch.Tensor], values: str,
                          V: int) -> None:
    """The checks of the (rows, K) teacher arrays that need their contents: index range, value range (no NaN),
    row sums <= 1 (+ tolerance), sampling probabilities in (0, 1], and no index twice among a row's live entries
    (without sampling). CPU arrays are checked with numpy: single-threaded, where each small parallel torch op can
    cost milliseconds of thread wake-up on a busy machine."""
    if math.prod(idx.shape) == 0:
        return
    cpu = idx.device.type == "cpu"
    xp = np if cpu else torch
    tol = 1e-2 if val.dtype in (torch.float16, torch.bfloat16) else 1e-4
    if cpu:
        idx, val = idx.detach().numpy(), (val.float() if val.dtype == torch.bfloat16 else val).detach().numpy()
        r = None if r is None else (r.float() if r.dtype == torch.bfloat16 else r).numpy()
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= V:
        raise ValueError(f"teacher_indices: index {lo if lo < 0 else hi} is out of range [0, {V})")
    if values == "logits":
        if not float(val.max()) < math.inf:  # NaN propagates through max
            raise ValueError(f"teacher_values: expected logits below +inf, without NaN; got {float(val.max())}")
        live = val > -math.inf
    else:
        p = val.astype(np.float64) if cpu else val.double()
        p = xp.exp(p) if values == "log_probs" else p
        lo_p, hi_p = float(p.min()), float(p.max())
        if not (lo_p >= 0 and hi_p <= 1):  # NaN fails too
            raise ValueError(f"teacher_values: expected probabilities in [0, 1] (log-probabilities <= 0), without "
                             f"NaN; got probabilities from {lo_p} to {hi_p}")
        if r is None and float(p.sum(-1).max()) > 1 + tol:
            raise ValueError(f"teacher_values: a row's probabilities sum to more than 1 (+{tol:g}); give "
                             "full-vocabulary-normalised, already-tempered probabilities")
        live = p > 0
    if r is not None:
        if not (float(r.min()) > 0 and float(r.max()) <= 1):  # NaN fails too
            raise ValueError("sampling_probs: expected probabilities in (0, 1]")
        return
    # a duplicate among the live entries: sort them (padding gets distinct negative keys), compare neighbours
    pad = -1 - xp.arange(idx.shape[-1])
    keys = np.sort(np.where(live, idx, pad), -1) if cpu else torch.where(live, idx, pad.to(idx.device)).sort(-1)[0]
    if bool((keys[..., 1:] == keys[..., :-1]).any()):
        raise ValueError("teacher_indices: an index appears twice in a row (allowed only with sampling_probs)")
