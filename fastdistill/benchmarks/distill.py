"""Distiller overhead: ``Distiller.step`` against a hand-written loop doing the same work (teacher forward without
gradients, student forward, the same fused loss, backward, AdamW step; with features, the same forward hooks and
projection), on separate copies of the same models and batch. Target: the Distiller's step at most 1.05x the hand
loop's (``peer/ours`` >= 0.95)."""
from __future__ import annotations

import copy
from typing import Callable, Iterator, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import fastdistill as fd
from ..bench import Row, compare, suite

T, ALPHA = 4.0, 0.5
# (label, d_in, teacher width, student width, classes, batch)
CASES = [("MLP 512-1024x2 -> 512-256, V=1000, B=256", 512, 1024, 256, 1000, 256),
         ("digits-size MLP 64-256x2 -> 64-128, V=10, B=64", 64, 256, 128, 10, 64)]


def models(d_in: int, wt: int, ws: int, classes: int) -> Tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(d_in, wt), nn.ReLU(), nn.Linear(wt, wt), nn.ReLU(), nn.Linear(wt, classes))
    student = nn.Sequential(nn.Linear(d_in, ws), nn.ReLU(), nn.Linear(ws, classes))
    return teacher.eval(), student


def hand_step(teacher: nn.Module, student: nn.Module, features: bool) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """The loop a user would write for the same distillation (features: hooks on both hidden layers, a projection
    of the student's into the teacher's width, MSE)."""
    params = list(student.parameters())
    captured = {}
    proj = None
    if features:
        student[1].register_forward_hook(lambda m, a, out: captured.__setitem__("s", out))
        teacher[1].register_forward_hook(lambda m, a, out: captured.__setitem__("t", out))
        proj = nn.Linear(student[0].out_features, teacher[0].out_features, bias=False)
        params += list(proj.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.no_grad():
            t = teacher(x)
        s = student(x)
        loss = fd.kd_loss(s, t, y, temperature=T, alpha=ALPHA)
        if proj is not None:
            loss = loss + F.mse_loss(proj(captured["s"]), captured["t"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def distiller_step(teacher: nn.Module, student: nn.Module, features: bool) -> Callable[[torch.Tensor, torch.Tensor],
                                                                                       None]:
    d = fd.distill.Distiller(teacher, student, loss=fd.nn.KDLoss(temperature=T, alpha=ALPHA), lr=1e-3,
                             features={"1": "1"} if features else None)
    return lambda x, y: d.step((x, y))


@suite("distill")
def distill_suite(quick: bool) -> Iterator[Row]:
    for label, d_in, wt, ws, classes, batch in (CASES[:1] if quick else CASES):
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(batch, d_in, generator=g), torch.randint(0, classes, (batch,), generator=g)
        for features in (False, True):
            teacher, student = models(d_in, wt, ws, classes)
            ours = distiller_step(copy.deepcopy(teacher), copy.deepcopy(student), features)
            peer = hand_step(copy.deepcopy(teacher), copy.deepcopy(student), features)
            yield compare("distill", label + (" +features" if features else ""), lambda: ours(x, y),
                          lambda: peer(x, y), ours_name="Distiller.step", peer_name="hand-written loop",
                          repeat=15 if quick else 60, target="peer/ours >= 0.95")
