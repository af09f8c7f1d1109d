"""Distillation-loss benchmarks: fused ``kd_loss`` forward + backward against the usual torch expression
``F.kl_div(F.log_softmax(s/T), F.log_softmax(t/T), log_target=True, "batchmean") * T^2 * alpha + (1 - alpha) *
F.cross_entropy(s, y)``, and the peak extra memory of both (resident-set high-water mark of a fresh child process,
in units of one fp32 logits tensor; the student's gradient, kept in ``.grad``, counts as 1.0)."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Iterator, Tuple

import torch
import torch.nn.functional as F

import fastdistill as fd
from ..bench import Row, compare, suite

T, ALPHA = 2.0, 0.5
SHAPES = [(1024, 32000), (4096, 1000), (256, 128256)]


def naive_loss(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    kl = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True, reduction="batchmean")
    return kl * T * T * ALPHA + (1 - ALPHA) * F.cross_entropy(s, y)


def ours_loss(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return fd.kd_loss(s, t, y, temperature=T, alpha=ALPHA)


def inputs(B: int, V: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    s = (torch.randn(B, V, generator=g) * 4).requires_grad_()
    return s, torch.randn(B, V, generator=g) * 4, torch.randint(0, V, (B,), generator=g)


def step(loss_fn, s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> None:
    s.grad = None
    loss_fn(s, t, y).backward()


_CHILD = """
import gc, sys, torch
from fastdistill.benchmarks.kd import inputs, naive_loss, ours_loss, step
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
B, V, which = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
fn = ours_loss if which == "ours" else naive_loss
step(fn, *inputs(2, V))  # warm-up (thread pools, lazy init) on small inputs: big frees would leave the allocator
gc.collect()              # holding resident memory that the measured step then reuses unseen
s, t, y = inputs(B, V)
base = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # resets VmHWM to the current RSS
step(fn, s, t, y)
print((status("VmHWM:") - base) / (B * V * 4))
"""


def peak_extra_memory(B: int, V: int, which: str) -> float:
    """Peak extra resident memory of one forward + backward, in fp32 logits tensors (a fresh process each time)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    out = subprocess.run([sys.executable, "-c", _CHILD, str(B), str(V), which], capture_output=True, text=True,
                         env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@suite("kd")
def kd_suite(quick: bool) -> Iterator[Row]:
    for B, V in SHAPES[:1] if quick else SHAPES:
        s, t, y = inputs(B, V)
        mem = ""
        if not quick:
            mem = (f" peak extra mem: ours {peak_extra_memory(B, V, 'ours'):.2f}x, naive "
                   f"{peak_extra_memory(B, V, 'naive'):.2f}x logits")
        yield compare("kd", f"{B}x{V} fp32 fwd+bwd T={T:g} alpha={ALPHA:g}{mem}", lambda: step(ours_loss, s, t, y),
                      lambda: step(naive_loss, s, t, y), ours_name="kd_loss", peer_name="kl_div(log_softmax)+CE",
                      target=">=5x peer, <=1.2x logits extra memory", repeat=6)
