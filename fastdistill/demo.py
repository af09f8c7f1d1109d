"""The main job, on data that ships with scikit-learn (8x8 digits, no download), built on the Distiller:

1. a teacher MLP, and the same student trained alone with cross-entropy;
2. the student distilled (soft targets), and distilled with hidden-state (feature) KD as well;
3. the label-scarce case: 10% of the labels. The student alone on them, against ``pretrain`` on every training
   input (soft targets, no labels) followed by ``finetune`` on the 10%;
4. the data compressed (``fastdistill.data.compress_dataset``: PCA to 95% of the variance, then 8-bit codes, 6.6x
   fewer bytes for the standardized pixels), and a student of the compressed width trained on it alone and
   distilled on it (the teacher reads the codes decoded back to pixels);
5. the distilled student pruned gradually to 90% while it keeps distilling (``GradualPruning``, Zhu & Gupta), with
   quantization-aware training, then converted to int8 (``compress.quantize``);
6. that student saved to a compact file and loaded back.

Each row reports test accuracy (mean +- std over the seeds), parameters (nonzero ones for pruned models), bytes
(what ``fastdistill.save`` writes) and the latency of a batch of 256 as fastdistill runs the model (sparse and int8
kernels) against plain torch (the dense fp32 model; ``quantize_dynamic`` for int8). ``--out DIR`` writes
``report.json`` and ``accuracy_vs_size.png`` (matplotlib, an optional extra: ``pip install fastdistill[plot]``).
Run it with ``fastdistill demo``.
"""
from __future__ import annotations

import copy
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from . import compress
from ._files import atomic_write
from ._timing import median_ms
from .compress.io import load, model_size, save
from .data import compress_dataset
from .distill import Distiller, GradualPruning, QuantizationAware
from .nn import KDLoss

Split = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
BATCH, LATENCY_BATCH, LABELED_FRACTION, SPARSITY = 64, 256, 0.1, 0.9
TEACHER_WIDTH, STUDENT_WIDTH = 256, 128
DATA_STEPS = ("pca:0.95", "quantize:8")


def load_digits_split(seed: int = 0) -> Split:
    """Standardized 8x8 digits as (x_train, y_train, x_test, y_test), a stratified 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    mean, std = x_tr.mean(0), x_tr.std(0)
    std = np.where(std > 0, std, 1.0)  # pixels blank in every training image stay 0 instead of blowing up
    to_x = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return to_x(x_tr), torch.tensor(y_tr), to_x(x_te), torch.tensor(y_te)


def mlp(hidden: int, depth: int = 2, inputs: int = 64) -> nn.Sequential:
    layers, width = [], inputs
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, 10))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train_alone(model: nn.Module, loader: DataLoader, epochs: int, lr: float) -> None:
    """The baseline: cross-entropy on the labels, no teacher."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()


def digits_loader(x: torch.Tensor, y: Optional[torch.Tensor], seed: int) -> DataLoader:
    """Shuffled batches of 64 of (x, y), or of (x,) without labels."""
    data = TensorDataset(x) if y is None else TensorDataset(x, y)
    return DataLoader(data, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed))


def _labeled_subset(y: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a class-stratified ``fraction`` of the samples."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(10):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        picks.append(idx[: max(1, round(fraction * idx.numel()))])
    return torch.cat(picks).sort().values


def _nonzero_params(model: nn.Module) -> int:
    return sum(int((p != 0).sum()) for p in model.parameters()) + sum(
        int((b != 0).sum()) for n, b in model.named_buffers() if not b.dtype == torch.bool and "int8" in n)


def _latency(model: nn.Module, x: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return median_ms(lambda: model(x), repeat=30, warmup=5)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


class _Decoded(nn.Module):
    """``model`` reading compressed features: ``step``'s inverse transform first (PCA coordinates to pixels)."""

    def __init__(self, step: Any, model: nn.Module) -> None:
        super().__init__()
        self.step, self.model = step, model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(self.step.inverse_transform(z).to(z.dtype))


def run_seed(seed: int, epochs: int, progress: bool = False) -> Dict[str, Dict[str, float]]:
    """Every row of the report for one seed: ``{row: {"accuracy", "params", "bytes", "latency_ms",
    "torch_latency_ms"}}``."""
    _seed_all(seed)
    x_tr, y_tr, x_te, y_te = load_digits_split(seed)
    rows: Dict[str, Dict[str, float]] = {}

    def record(name: str, model: nn.Module, *, fast: Optional[nn.Module] = None, peer: Optional[nn.Module] = None,
               nbytes: Optional[int] = None, x: Optional[torch.Tensor] = None,
               data_ratio: Optional[float] = None) -> None:
        """``fast``: the model as fastdistill runs it (default ``model``); ``peer``: plain torch's equivalent;
        ``x``: the test inputs as this model reads them (default the pixels); ``data_ratio``: how much smaller
        its training data was stored."""
        fast = fast if fast is not None else model
        peer = peer if peer is not None else fast
        x = x_te if x is None else x
        lat = x.repeat(math.ceil(LATENCY_BATCH / len(x)), 1)[:LATENCY_BATCH]
        rows[name] = {"accuracy": accuracy(fast, x, y_te), "params": float(_nonzero_params(model)),
                      "bytes": float(nbytes if nbytes is not None else model_size(model)),
                      "latency_ms": _latency(fast, lat), "torch_latency_ms": _latency(peer, lat)}
        if data_ratio is not None:
            rows[name]["data_ratio"] = float(data_ratio)

    train = digits_loader(x_tr, y_tr, seed)
    teacher = mlp(TEACHER_WIDTH)
    train_alone(teacher, train, epochs, lr=3e-3)
    record("teacher", teacher)

    alone = mlp(STUDENT_WIDTH, depth=1)
    init = copy.deepcopy(alone.state_dict())  # every student row starts from the same weights
    train_alone(alone, train, epochs, lr=3e-3)
    record("student alone", alone)

    kd = KDLoss(temperature=4.0, alpha=0.5)  # the Distiller's default loss
    distilled = mlp(STUDENT_WIDTH, depth=1)
    distilled.load_state_dict(init)
    Distiller(teacher, distilled, loss=kd, lr=3e-3).fit(train, epochs, progress=progress)
    record("distilled", distilled)

    featured = mlp(STUDENT_WIDTH, depth=1)
    featured.load_state_dict(init)
    Distiller(teacher, featured, loss=kd, lr=3e-3, features={"1": "3"}, feature_loss="cosine").fit(
        train, epochs, progress=progress)
    record("distilled + features", featured)

    # label-scarce: 10% of the labels
    few = _labeled_subset(y_tr, LABELED_FRACTION, seed)
    few_loader = digits_loader(x_tr[few], y_tr[few], seed)
    scarce_epochs = epochs * 3  # the same number of optimizer steps as a pass over all labels takes, roughly
    scarce_alone = mlp(STUDENT_WIDTH, depth=1)
    scarce_alone.load_state_dict(init)
    train_alone(scarce_alone, few_loader, scarce_epochs, lr=3e-3)
    record("10% labels: alone", scarce_alone)
    scarce_kd = mlp(STUDENT_WIDTH, depth=1)
    scarce_kd.load_state_dict(init)
    Distiller(teacher, scarce_kd, loss=kd, mode="pretrain", lr=3e-3).fit(digits_loader(x_tr, None, seed), epochs,
                                                                          progress=progress)
    Distiller(teacher, scarce_kd, loss=kd, mode="finetune").fit(few_loader, scarce_epochs, progress=progress)
    record("10% labels: pretrain + finetune", scarce_kd)

    # the data step: the training set compressed (PCA to 95% of the variance, then 8-bit codes: what a device
    # would store or receive), a student of the compressed width trained on it alone and distilled on it (the
    # teacher reads the codes decoded back to pixels); the test set goes through the same fitted steps
    packed = compress_dataset(x_tr, y_tr, DATA_STEPS, evaluate=False)
    z_tr, z_te = packed.features(), packed.transform(x_te)
    z_train = digits_loader(z_tr, y_tr, seed)
    data_ratio = packed.report["ratio"]
    small_alone = mlp(STUDENT_WIDTH, depth=1, inputs=z_tr.shape[1])
    small_init = copy.deepcopy(small_alone.state_dict())
    train_alone(small_alone, z_train, epochs, lr=3e-3)
    record("compressed data: alone", small_alone, x=z_te, data_ratio=data_ratio)
    small_kd = mlp(STUDENT_WIDTH, depth=1, inputs=z_tr.shape[1])
    small_kd.load_state_dict(small_init)
    Distiller(_Decoded(packed.steps[0][1], teacher), small_kd, loss=kd, lr=3e-3).fit(z_train, epochs,
                                                                                    progress=progress)
    record("compressed data: distilled", small_kd, x=z_te, data_ratio=data_ratio)

    pruned = copy.deepcopy(distilled)
    steps = epochs * len(train)
    Distiller(teacher, pruned, loss=kd, lr=2e-3, callbacks=[
        GradualPruning(SPARSITY, start=0, end=steps // 2, every=max(1, steps // 30)),
        QuantizationAware(bits=8)]).fit(train, epochs, progress=progress)
    compress.remove_pruning(pruned)
    sparse = copy.deepcopy(pruned)
    compress.sparsify(sparse, batch_size=LATENCY_BATCH)
    record(f"{SPARSITY:.0%} pruned", pruned, fast=sparse, peer=pruned)

    int8 = compress.quantize(pruned)
    with warnings.catch_warnings():  # torch deprecates the quantized tensors its own peer is made of
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated", category=UserWarning)
        peer = torch.ao.quantization.quantize_dynamic(copy.deepcopy(pruned), {nn.Linear}, dtype=torch.qint8)
    record(f"{SPARSITY:.0%} pruned + int8", pruned, fast=int8, peer=peer, nbytes=model_size(int8))

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "student.fd")
        save(int8, path)
        size = os.path.getsize(path)
        reloaded = load(path, mlp(STUDENT_WIDTH, depth=1))
    record("saved file, reloaded", pruned, fast=reloaded, peer=peer, nbytes=size)
    return rows


def _summary(values: List[float]) -> Dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(seeds: int = 3, quick: bool = False, progress: bool = False, threads: int = 1) -> Dict[str, Any]:
    """The report: per row, each metric's mean, std and per-seed values over ``seeds`` seeds (0, 1, ...), run on
    ``threads`` torch threads (default 1: on models this small, more threads cost more in wake-ups than they
    save)."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds: expected an int >= 1, got {seeds!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads: expected an int >= 1, got {threads!r}")
    epochs = 8 if quick else 30
    wall, cpu = time.perf_counter(), _cpu_seconds()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        per_seed = [run_seed(s, epochs, progress) for s in range(seeds)]
    finally:
        torch.set_num_threads(before)
    rows = []
    for name in per_seed[0]:
        row: Dict[str, Any] = {"name": name}
        for metric in per_seed[0][name]:
            row[metric] = _summary([r[name][metric] for r in per_seed])
        rows.append(row)
    return {"seeds": seeds, "quick": quick, "epochs": epochs, "threads": threads,
            "latency_batch": LATENCY_BATCH, "rows": rows,
            "seconds": {"wall": time.perf_counter() - wall, "cpu": _cpu_seconds() - cpu}}


def _fmt_bytes(n: float) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n:.0f} B"


def table(report: Dict[str, Any]) -> str:
    lines = [f"{'':34s} {'accuracy':>15s} {'params':>8s} {'bytes':>10s} {'batch ' + str(report['latency_batch']):>22s}",
             f"{'':34s} {'mean +- std':>15s} {'':>8s} {'':>10s} {'fastdistill / torch ms':>22s}"]
    for r in report["rows"]:
        acc = r["accuracy"]
        data = f"   (training data {r['data_ratio']['mean']:.1f}x smaller)" if "data_ratio" in r else ""
        lines.append(f"  {r['name']:32s} {acc['mean']:.3f} +- {acc['std']:.3f} {r['params']['mean']:8.0f} "
                     f"{_fmt_bytes(r['bytes']['mean']):>10s} {r['latency_ms']['mean']:10.3f} / "
                     f"{r['torch_latency_ms']['mean']:.3f}{data}")
    return "\n".join(lines)


def _plot(report: Dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in report["rows"]:
        ax.errorbar(r["bytes"]["mean"], 100 * r["accuracy"]["mean"], yerr=100 * r["accuracy"]["std"], fmt="o",
                    capsize=3, label=r["name"])
    ax.set_xscale("log")
    ax.set_xlabel("model size (bytes, as fastdistill.save stores it)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"digits: accuracy vs size ({report['seeds']} seeds, mean +- std)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def write_outputs(report: Dict[str, Any], out: str) -> List[str]:
    """Writes ``report.json`` and, with matplotlib installed, ``accuracy_vs_size.png`` to ``out``, each atomically.
    Returns the paths written."""
    os.makedirs(out, exist_ok=True)
    written = []
    path = os.path.join(out, "report.json")
    atomic_write(path, lambda tmp: _write_text(tmp, json.dumps(report, indent=1)))
    written.append(path)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("  (no PNG: matplotlib is not installed; pip install 'fastdistill[plot]')")
        return written
    path = os.path.join(out, "accuracy_vs_size.png")
    atomic_write(path, lambda tmp: _plot(report, tmp))
    written.append(path)
    return written


def main(quick: bool = False, seeds: int = 3, out: Optional[str] = "fastdistill-demo", threads: int = 1,
         progress: bool = False) -> int:
    try:
        if out:
            os.makedirs(out, exist_ok=True)  # fail now, not after the run
            if not os.access(out, os.W_OK):
                raise PermissionError(f"--out: cannot write to {out!r}")
        print(f"fastdistill demo: digits (1797 8x8 images), {seeds} seed(s){', quick' if quick else ''}, "
              f"{threads} thread(s)", flush=True)
        report = run(seeds=seeds, quick=quick, progress=progress, threads=threads)
        print(table(report))
        sec = report["seconds"]
        print(f"  {sec['wall']:.1f} s wall, {sec['cpu']:.1f} s CPU")
        if out:
            for path in write_outputs(report, out):
                print(f"  wrote {path}")
    except Exception as exc:  # the command's contract: a clear message and a non-zero exit, no traceback
        print(f"fastdistill demo: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
