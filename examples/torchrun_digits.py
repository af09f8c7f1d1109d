"""Data-parallel distillation on CPU: the same script runs in one process or under torchrun.

    python examples/torchrun_digits.py                                      # one process
    torchrun --nproc_per_node=2 examples/torchrun_digits.py                 # two (gloo), the same global batch
    torchrun --nproc_per_node=2 examples/torchrun_digits.py --int8-allreduce  # gradients sent as int8
    torchrun --nproc_per_node=2 examples/torchrun_digits.py --resume ckpt.pt  # continue from a checkpoint

The Distiller joins the process group torchrun sets up, shards the loader (each rank reads batch_size / world
samples per step, so the global batch is --batch-size whatever the number of processes), wraps the student in DDP,
reduces the metrics over the ranks, and only rank 0 prints and writes the checkpoint (after every epoch).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

from fastdistill.demo import load_digits_split, mlp, train_alone
from fastdistill.distill import Callback, Distiller, GradualPruning
from fastdistill.distributed import QuantizedAllReduceState, quantized_allreduce_hook


class Checkpoint(Callback):
    def __init__(self, path: str):
        self.path = path

    def on_epoch_end(self, distiller, epoch, logs):
        distiller.save_checkpoint(self.path)  # rank 0 writes; the others return at once


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64, help="global batch (split over the processes)")
    p.add_argument("--int8-allreduce", action="store_true")
    p.add_argument("--sparsity", type=float, default=0.0, help="prune the student gradually to this sparsity")
    p.add_argument("--checkpoint", default="digits-ckpt.pt")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    args = p.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x_tr, y_tr, x_te, y_te = load_digits_split(0)
    teacher = mlp(256)
    # every rank trains the same teacher (same seed, same data): no communication needed for it
    train_alone(teacher, DataLoader(TensorDataset(x_tr, y_tr), batch_size=64, shuffle=True), 20, lr=3e-3)
    student = mlp(128, depth=1)
    loader = DataLoader(TensorDataset(x_tr, y_tr), batch_size=args.batch_size // world, shuffle=True)
    test = DataLoader(TensorDataset(x_te, y_te), batch_size=256)
    kw = dict(lr=3e-3, callbacks=[Checkpoint(args.checkpoint)])
    if args.sparsity:
        steps = args.epochs * len(loader)
        kw["callbacks"].append(GradualPruning(args.sparsity, start=0, end=steps // 2, every=max(1, steps // 30)))
    if args.int8_allreduce:
        kw["comm_hook"] = (QuantizedAllReduceState(), quantized_allreduce_hook)
    if args.resume:
        d = Distiller.resume(args.checkpoint, teacher, student, **kw)
    else:
        d = Distiller(teacher, student, **kw)
    history = d.fit(loader, args.epochs - d.epoch, val_loader=test)
    if d.rank == 0:
        last = history[-1]
        print(f"world {d.world_size}: {len(history)} epochs, loss {last['loss']:.4f}, test accuracy "
              f"{last['val_accuracy']:.4f}, {last['samples_per_s']:.0f} samples/s")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
