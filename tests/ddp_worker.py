"""The script tests/test_distill_ddp.py runs under torchrun (2 CPU processes, gloo), and in one process for the
reference: the same Distiller code either way."""
from __future__ import annotations

import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastdistill.distill import Distiller
from fastdistill.distributed import QuantizedAllReduceState, quantized_allreduce_hook

EPOCHS, SEED = 3, 1


def problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 12, generator=g)
    y = (x[:, :5] + 0.3 * torch.randn(256, 5, generator=g)).argmax(1)
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 5))
    student = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 5))
    return TensorDataset(x, y), teacher, student


def run(batch_size: int, sampler=None, comm_hook=None):
    """(epoch losses, student state) of a fit; ``sampler`` None: a shuffled loader, as a user script has."""
    data, teacher, student = problem()
    torch.manual_seed(SEED)
    loader = DataLoader(data, batch_size=batch_size, shuffle=sampler is None, sampler=sampler)
    d = Distiller(teacher, student, features={"1": "1"}, lr=1e-2, comm_hook=comm_hook)
    history = d.fit(loader, EPOCHS, progress=False)
    return [h["loss"] for h in history], {k: v.clone() for k, v in student.state_dict().items()}, d


if __name__ == "__main__":
    plain_loss, plain_state, d = run(16)
    hook_loss, hook_state, _ = run(16, comm_hook=(QuantizedAllReduceState(), quantized_allreduce_hook))
    if d.rank == 0:
        torch.save({"world": d.world_size, "plain": (plain_loss, plain_state), "hook": (hook_loss, hook_state)},
                   sys.argv[1])
