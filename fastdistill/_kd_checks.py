"""Checks of the distillation losses' tensor contents (class indices, sparse-teacher entries). They run in the ops'
bodies (:mod:`fastdistill._ops`), which every call goes through, eager or compiled (a compiled graph runs the custom
op's body as it is, untraced): so a check on values is made once per call, and never skipped under torch.compile.
Errors name the public arguments."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch


def check_classes(target: Optional[torch.Tensor], rows: int, num_classes: int, ignore_index: int) -> None:
    """ValueError unless the int64 ``target`` holds ``rows`` entries, each a class in ``[0, num_classes)`` or
    ignore_index (the kernels index a row's gradient with it)."""
    if target is None:
        return
    if target.numel() != rows:
        raise ValueError(f"target: expected {rows} class indices (one per row), got {target.numel()}")
    if rows == 0:
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        value = int(target[bad][0])
        raise ValueError(f"target: class index {value} is out of range [0, {num_classes}) and is not "
                         f"ignore_index ({ignore_index})")


def check_sparse_teacher(idx: torch.Tensor, val: torch.Tensor, r: Optional[torch.Tensor], values: str,
                          rows: int, V: int) -> None:
    """The checks of the (rows, K) teacher arrays: their shapes (the kernels index them per student row), and what
    needs their contents: index range, value range (no NaN),
    row sums <= 1 (+ tolerance), sampling probabilities in (0, 1], and no index twice among a row's live entries
    (without sampling). CPU arrays are checked with numpy: single-threaded, where each small parallel torch op can
    cost milliseconds of thread wake-up on a busy machine."""
    if idx.dim() != 2 or idx.shape[0] != rows or val.shape != idx.shape or (r is not None and r.shape != idx.shape):
        raise ValueError(f"teacher_indices, teacher_values, sampling_probs: expected ({rows}, K) each, got "
                         f"{tuple(idx.shape)}, {tuple(val.shape)}, {None if r is None else tuple(r.shape)}")
    if math.prod(idx.shape) == 0:
        return
    with np.errstate(all="ignore"):  # exp overflow and NaN are what the checks report
        _check_entries(idx, val, r, values, V)


def _check_entries(idx: torch.Tensor, val: torch.Tensor, r: Optional[torch.Tensor], values: str, V: int) -> None:
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
