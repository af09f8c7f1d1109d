"""Distillation-loss benchmarks, forward + backward, with the peak extra memory of each side (resident-set
high-water mark of a fresh child process):

* ``kd_loss`` against the usual torch expression ``F.kl_div(F.log_softmax(s/T), F.log_softmax(t/T),
  log_target=True, "batchmean") * T^2 * alpha + (1 - alpha) * F.cross_entropy(s, y)``, and ``sparse_kd_loss`` with
  a cached top-K teacher against the same loss written in torch (log_softmax, gather, and the scatter of gather's
  backward); memory in units of one fp32 logits tensor (the student's gradient, kept in ``.grad``, counts as 1.0).
* ``fused_linear_kd_loss`` against ``F.linear`` for both LM heads (the teacher's under no_grad) + that expression;
  memory as MiB beyond the gradients (of the student's hidden states and head weight), which both sides must hold.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F

import fastdistill as fd
from ..bench import Row, compare, simd_levels, suite

T, ALPHA = 2.0, 0.5
SHAPES = [(1024, 32000), (4096, 1000), (256, 128256)]
SPARSE_SHAPE, TOP_K = (1024, 32000), 64
LINEAR_SHAPES = [(1024, 32000, 2048), (16, 32000, 2048)]  # (rows, vocabulary, hidden size)


def naive_loss(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    kl = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True, reduction="batchmean")
    return kl * T * T * ALPHA + (1 - ALPHA) * F.cross_entropy(s, y)


def ours_loss(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return fd.kd_loss(s, t, y, temperature=T, alpha=ALPHA)


def inputs(B: int, V: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    s = (torch.randn(B, V, generator=g) * 4).requires_grad_()
    return s, torch.randn(B, V, generator=g) * 4, torch.randint(0, V, (B,), generator=g)


def sparse_naive_loss(s: torch.Tensor, idx: torch.Tensor, lp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The top-K teacher (log-probabilities lp at idx), renormalised: KL(p_hat || q) * T^2 * alpha + (1 - alpha) CE."""
    p_hat = F.softmax(lp, -1)
    kl = (p_hat * (p_hat.log() - F.log_softmax(s / T, -1).gather(-1, idx))).sum() / s.shape[0]
    return kl * T * T * ALPHA + (1 - ALPHA) * F.cross_entropy(s, y)


def sparse_ours_loss(s: torch.Tensor, idx: torch.Tensor, lp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return fd.sparse_kd_loss(s, idx, lp, y, values="log_probs", temperature=T, alpha=ALPHA)


def sparse_inputs(B: int, V: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    s, t, y = inputs(B, V)
    top = F.log_softmax(t / T, -1).topk(min(TOP_K, V), -1)
    return s, top.indices, top.values, y


def step(loss_fn, s: torch.Tensor, *rest: torch.Tensor) -> None:
    s.grad = None
    loss_fn(s, *rest).backward()


def naive_linear_loss(hs, ws, ht, wt, y) -> torch.Tensor:
    s = F.linear(hs, ws)
    with torch.no_grad():
        t = F.linear(ht, wt)
    return naive_loss(s, t, y)


def fused_linear_loss(hs, ws, ht, wt, y) -> torch.Tensor:
    return fd.fused_linear_kd_loss(hs, ws, ht, wt, y, temperature=T, alpha=ALPHA)


def linear_inputs(B: int, V: int, d: int) -> Tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    hs = torch.randn(B, d, generator=g).requires_grad_()
    ws = (torch.randn(V, d, generator=g) * d ** -0.5 * 4).requires_grad_()
    ht, wt = torch.randn(B, d, generator=g), torch.randn(V, d, generator=g) * d ** -0.5 * 4
    return hs, ws, ht, wt, torch.randint(0, V, (B,), generator=g)


def linear_step(loss_fn, hs, ws, ht, wt, y) -> None:
    hs.grad = ws.grad = None
    loss_fn(hs, ws, ht, wt, y).backward()


# name -> (make inputs from sizes, loss, step)
CASES = {"ours": (inputs, ours_loss, step), "naive": (inputs, naive_loss, step),
         "sparse_ours": (sparse_inputs, sparse_ours_loss, step), "sparse_naive": (sparse_inputs, sparse_naive_loss, step),
         "fused_linear": (linear_inputs, fused_linear_loss, linear_step),
         "naive_linear": (linear_inputs, naive_linear_loss, linear_step)}


_CHILD = """
import gc, sys, torch
from fastdistill.benchmarks.kd import CASES
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
which, sizes = sys.argv[1], [int(a) for a in sys.argv[2:]]
make, fn, step = CASES[which]
step(fn, *make(2, *sizes[1:]))  # warm-up (thread pools, lazy init) on small inputs: big frees would leave the
gc.collect()                    # allocator holding resident memory that the measured step then reuses unseen
args = make(*sizes)
base = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # resets VmHWM to the current RSS
step(fn, *args)
print(status("VmHWM:") - base)
"""


def peak_extra_bytes(which: str, *sizes: int) -> int:
    """Peak extra resident bytes of one forward + backward of case ``which`` (a fresh process each time)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    level = simd_levels(None)[0]  # the child runs at this process's level (the bench may have switched it)
    if level is not None:
        env["FASTDISTILL_SIMD"] = level
    out = subprocess.run([sys.executable, "-c", _CHILD, which, *map(str, sizes)], capture_output=True, text=True,
                         env=env, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def _memory_note(B: int, V: int, ours: str, naive: str, quick: bool) -> Optional[str]:
    if quick:
        return None
    ours_mem, naive_mem = (peak_extra_bytes(w, B, V) / (B * V * 4) for w in (ours, naive))
    return f"peak extra mem: ours {ours_mem:.2f}x, naive {naive_mem:.2f}x logits"


@suite("kd")
def kd_suite(quick: bool) -> Iterator[Row]:
    for B, V in SHAPES[:1] if quick else SHAPES:
        s, t, y = inputs(B, V)
        mem = _memory_note(B, V, "ours", "naive", quick)
        yield compare("kd", f"{B}x{V} fp32 fwd+bwd T={T:g} alpha={ALPHA:g}", lambda: step(ours_loss, s, t, y),
                      lambda: step(naive_loss, s, t, y), ours_name="kd_loss", peer_name="kl_div(log_softmax)+CE",
                      target=">=5x peer, <=1.2x logits extra memory", repeat=6, note=mem)
    B, V = SPARSE_SHAPE
    args = sparse_inputs(B, V)
    mem = _memory_note(B, V, "sparse_ours", "sparse_naive", quick)
    yield compare("kd", f"{B}x{V} top-{TOP_K} teacher fp32 fwd+bwd T={T:g} alpha={ALPHA:g}",
                  lambda: step(sparse_ours_loss, *args), lambda: step(sparse_naive_loss, *args),
                  ours_name="sparse_kd_loss", peer_name="log_softmax+gather+CE", repeat=6, note=mem)
    for B, V, d in [(64, 4000, 256)] if quick else LINEAR_SHAPES:
        args = linear_inputs(B, V, d)
        mem = None
        if not quick:
            grads = (B * d + V * d) * 4
            ours_mem, naive_mem = ((peak_extra_bytes(w, B, V, d) - grads) / 2**20
                                   for w in ("fused_linear", "naive_linear"))
            mem = f"non-gradient peak extra mem: ours {ours_mem:.0f} MiB, naive {naive_mem:.0f} MiB"
        yield compare("kd", f"LM heads B={B} V={V} d={d} fp32 fwd+bwd",
                      lambda: linear_step(fused_linear_loss, *args), lambda: linear_step(naive_linear_loss, *args),
                      ours_name="fused_linear_kd_loss", peer_name="F.linear x2 + kl_div+CE",
                      target=">=1x peer, <1/4 of its non-gradient extra memory", repeat=3, note=mem)
