"""The main job on embedded data: distill a small student from a teacher on scikit-learn's digits (shipped with
scikit-learn, no download) with the fused KD loss, prune the student with magnitude pruning, fine-tune it with the
masks held, quantize it to int8, write it as a compact model file and load it back; report accuracy, sizes and time.
Run it with ``fastdistill demo``."""
from __future__ import annotations

import copy
import os
import tempfile
import time
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import compress
from .compress.io import load, model_size, save
from .kd import kd_loss

Split = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def load_digits_split(seed: int = 0) -> Split:
    """Standardized 8x8 digits as (x_train, y_train, x_test, y_test), a fixed 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    mean, std = x_tr.mean(0), x_tr.std(0)
    std = np.where(std > 0, std, 1.0)  # pixels blank in every training image stay 0 instead of blowing up
    to_x = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return to_x(x_tr), torch.tensor(y_tr), to_x(x_te), torch.tensor(y_te)


def mlp(hidden: int, depth: int = 2) -> nn.Sequential:
    layers, width = [], 64
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, 10))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train(model: nn.Module, data: Split, epochs: int, teacher: Optional[nn.Module] = None, lr: float = 3e-3,
          seed: int = 0) -> None:
    x_tr, y_tr = data[0], data[1]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    if teacher is not None:
        teacher.eval()
        with torch.no_grad():
            teacher_logits = teacher(x_tr)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x_tr), generator=gen).split(64):
            logits = model(x_tr[idx])
            if teacher is None:
                loss = F.cross_entropy(logits, y_tr[idx])
            else:
                # Hinton's soft targets (T = 4) plus cross-entropy on the labels, gradient computed in the same pass
                loss = kd_loss(logits, teacher_logits[idx], y_tr[idx], temperature=4.0, alpha=0.7)
            opt.zero_grad()
            loss.backward()
            opt.step()


def run(quick: bool = False, sparsity: float = 0.8, seed: int = 0) -> Dict[str, float]:
    """Teacher -> distilled student -> pruned + fine-tuned student; returns the metrics."""
    torch.manual_seed(seed)
    data = load_digits_split(seed)
    epochs = 8 if quick else 30
    out: Dict[str, float] = {}
    t0 = time.perf_counter()
    teacher = mlp(256)
    train(teacher, data, epochs, seed=seed)
    out["teacher_acc"] = accuracy(teacher, data[2], data[3])
    student = mlp(64, depth=1)
    out["student_params"] = sum(p.numel() for p in student.parameters())
    train(student, data, epochs, teacher=teacher, seed=seed)
    out["student_acc"] = accuracy(student, data[2], data[3])
    compress.prune(student, sparsity)
    out["pruned_acc_before_finetune"] = accuracy(student, data[2], data[3])
    train(student, data, max(3, epochs // 2), teacher=teacher, lr=1e-3, seed=seed + 1)
    out["pruned_acc"] = accuracy(student, data[2], data[3])
    out["student_sparsity"] = compress.sparsity(student)["total"]
    compress.remove_pruning(student)
    out["teacher_params"] = sum(p.numel() for p in teacher.parameters())
    out["student_nonzero_params"] = sum(int((p != 0).sum()) for p in student.parameters())
    out["teacher_bytes"] = model_size(teacher)
    out["pruned_bytes"] = model_size(student)  # pruned weights are stored as bitmask + nonzeros
    quantized = compress.quantize(student, calibration=[data[0][:256]])
    out["int8_acc"] = accuracy(quantized, data[2], data[3])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "student.fd")
        save(quantized, path)
        out["int8_file_bytes"] = os.path.getsize(path)
        reloaded = load(path, copy.deepcopy(mlp(64, depth=1)))
    out["reloaded_acc"] = accuracy(reloaded, data[2], data[3])
    out["seconds"] = time.perf_counter() - t0
    return out


def main(quick: bool = False) -> int:
    m = run(quick=quick)
    print("fastdistill demo: distill + prune an MLP student on scikit-learn digits (1797 8x8 images)")
    print(f"  teacher  MLP 64-256-256-10   params {m['teacher_params']:>7}  test accuracy {m['teacher_acc']:.3f}")
    print(f"  student  MLP 64-64-10 (KD)   params {m['student_params']:>7}  test accuracy {m['student_acc']:.3f}")
    print(f"  pruned   {m['student_sparsity']:.0%} of student weights  nonzero {m['student_nonzero_params']:>5}  "
          f"accuracy {m['pruned_acc_before_finetune']:.3f} -> {m['pruned_acc']:.3f} after KD fine-tuning")
    print(f"  int8     Int8Linear student                  accuracy {m['int8_acc']:.3f}; reloaded from its "
          f"{m['int8_file_bytes']} B file: {m['reloaded_acc']:.3f}")
    print(f"  stored   teacher {m['teacher_bytes']} B -> pruned fp32 student {m['pruned_bytes']} B -> "
          f"pruned int8 student {m['int8_file_bytes']} B (file, with its header)")
    print(f"  total {m['seconds']:.1f} s")
    return 0
