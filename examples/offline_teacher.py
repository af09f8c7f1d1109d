"""Offline distillation: run the teacher once, keep its top-k, train the student without the teacher loaded.

A toy language model (sequences of tokens over a 1024-word vocabulary) stands in for an LLM: the teacher's hidden
states go through its LM head chunk by chunk (``head=``), so the cache is written without ever holding a
(tokens x vocabulary) logits tensor; the student then trains from the cache with ``loss="entropy_sparse"``
(top-k plus one tail bucket, through ``fastdistill.sparse_kd_loss``) and is compared with the same student trained
online against the teacher, with dense soft targets.

    python examples/offline_teacher.py --top-k 32
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastdistill.distill import Distiller, SparseKDLoss, TeacherCache, cache_teacher
from fastdistill.nn import KDLoss

V, SEQ, T = 1024, 32, 2.0


class TinyLM(nn.Module):
    """Embedding -> GRU -> (optionally) LM head."""

    def __init__(self, width: int, with_head: bool = True):
        super().__init__()
        self.embed = nn.Embedding(V, width)
        self.rnn = nn.GRU(width, width, batch_first=True)
        self.head = nn.Linear(width, V) if with_head else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.rnn(self.embed(tokens))[0]
        return h if self.head is None else self.head(h)


class Body(nn.Module):
    """The teacher without its head: what cache_teacher runs when given head=."""

    def __init__(self, lm: TinyLM):
        super().__init__()
        self.lm = lm

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm.rnn(self.lm.embed(tokens))[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--top-k", type=int, default=32)
    p.add_argument("--sequences", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=4)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    # a random "language": token t is followed by one of 4 tokens that depend on t (best accuracy: about 1/4)
    nxt = torch.randint(0, V, (V, 4))
    seqs = torch.empty(args.sequences, SEQ + 1, dtype=torch.int64)
    seqs[:, 0] = torch.randint(0, V, (args.sequences,))
    for i in range(SEQ):
        seqs[:, i + 1] = nxt[seqs[:, i], torch.randint(0, 4, (args.sequences,))]
    x, y = seqs[:, :-1], seqs[:, 1:]
    data = TensorDataset(x, y)
    teacher = TinyLM(256)
    opt = torch.optim.Adam(teacher.parameters(), 3e-3)
    for _ in range(4):
        for xb, yb in DataLoader(data, batch_size=32, shuffle=True):
            opt.zero_grad()
            nn.functional.cross_entropy(teacher(xb).reshape(-1, V), yb.reshape(-1)).backward()
            opt.step()
    test = DataLoader(data, batch_size=64)
    student0 = TinyLM(64)
    loader = DataLoader(data, batch_size=32, shuffle=True)
    kd = dict(temperature=T, alpha=0.5, reduction="mean")  # mean over tokens
    online = TinyLM(64)
    online.load_state_dict(student0.state_dict())
    torch.manual_seed(1)
    h_on = Distiller(teacher, online, loss=KDLoss(**kd), lr=3e-3).fit(loader, args.epochs, val_loader=test)
    with torch.no_grad():
        teacher_acc = float((teacher(x).argmax(-1) == y).float().mean())
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cache = cache_teacher(Body(teacher), DataLoader(data, batch_size=64), os.path.join(tmp, "cache"),
                              top_k=args.top_k, temperature=T, head=teacher.head)
        size = sum(os.path.getsize(os.path.join(tmp, "cache", f)) for f in os.listdir(os.path.join(tmp, "cache")))
        print(f"cache: {len(cache)} sequences x {SEQ} tokens, top-{cache.top_k} of {V}, {size / 1e6:.1f} MB, "
              f"{time.perf_counter() - t0:.1f} s")
        del teacher  # the offline student never needs it
        offline = TinyLM(64)
        offline.load_state_dict(student0.state_dict())
        torch.manual_seed(1)
        h_off = Distiller(TeacherCache(os.path.join(tmp, "cache")), offline, loss=SparseKDLoss(top_k=args.top_k, **kd),
                          lr=3e-3).fit(loader, args.epochs, val_loader=test)
    print(f"next-token accuracy: teacher {teacher_acc:.4f}, online student {h_on[-1]['val_accuracy']:.4f}, "
          f"offline student (top-{args.top_k} + tail bucket) {h_off[-1]['val_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
