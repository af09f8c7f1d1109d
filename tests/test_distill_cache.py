"""Offline teachers: cache_teacher / TeacherCache against the teacher they were written from, training from a cache
with top_k = V reproduces online KD, the LM-head path never holds the logits, and mismatches raise clearly."""
from __future__ import annotations

import copy
import json
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fastdistill as fd
from fastdistill.distill import Distiller, SparseKDLoss, TeacherCache, cache_teacher

D_IN, V = 10, 23


def setup(n=70, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=g)
    y = torch.randint(0, V, (n,), generator=g)
    torch.manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(D_IN, 32), nn.Tanh(), nn.Linear(32, V))
    student = nn.Sequential(nn.Linear(D_IN, 8), nn.Tanh(), nn.Linear(8, V))
    return x, y, teacher, student


def test_cache_holds_the_teachers_top_k(tmp_path):
    x, y, teacher, _ = setup()
    shuffled = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)  # rows are keyed by dataset index
    cache = cache_teacher(teacher, shuffled, tmp_path / "c", top_k=5, temperature=2.0, shard_samples=32)
    assert (len(cache), cache.vocab_size, cache.top_k, cache.temperature, cache.row_shape) == (70, V, 5, 2.0, ())
    assert sorted(os.listdir(tmp_path / "c")) == ["manifest.json", "shard-00000.fd", "shard-00001.fd",
                                                  "shard-00002.fd"]
    idx = torch.tensor([69, 0, 33, 31, 32, 5])
    got = cache[idx]
    with torch.no_grad():
        lp = torch.log_softmax(teacher(x[idx]) / 2.0, -1)
    top = lp.topk(5)
    assert torch.equal(got.indices, top.indices)
    torch.testing.assert_close(got.log_probs, top.values.to(torch.bfloat16).float())
    torch.testing.assert_close(got.tail, 1 - top.values.exp().sum(-1), rtol=0, atol=1e-6)
    assert got.indices.dtype == torch.int64 and got.log_probs.dtype == torch.float32


def test_sequence_rows_and_the_lm_head_path(tmp_path):
    """A (B, T, d) hidden-state teacher with an LM head gives what its full logits give."""
    torch.manual_seed(1)
    body, head = nn.Linear(6, 12), nn.Linear(12, 40)
    x = torch.randn(9, 5, 6)
    ds = DataLoader(TensorDataset(x), batch_size=4)
    via_head = cache_teacher(body, ds, tmp_path / "h", top_k=7, head=head, dtype=torch.float32)
    full = cache_teacher(nn.Sequential(body, head), ds, tmp_path / "f", top_k=7, dtype=torch.float32)
    assert via_head.row_shape == (5,) and via_head.vocab_size == 40
    a, b = via_head[range(9)], full[range(9)]
    assert torch.equal(a.indices, b.indices) and a.indices.shape == (9, 5, 7)
    torch.testing.assert_close(a.log_probs, b.log_probs)
    with pytest.raises(ValueError, match="head"):
        cache_teacher(body, ds, tmp_path / "bad", head=torch.randn(40, 13))


def test_head_logits_are_made_in_chunks(tmp_path, monkeypatch):
    """With a head, no more than a chunk of rows x V logits exists at once."""
    from fastdistill.distill import cache as cache_mod

    rows_seen = []
    real = F.linear

    def spy(x, w, b=None):
        out = real(x, w, b)
        if w.shape[0] == 4096:
            rows_seen.append(out.shape[0])
        return out

    monkeypatch.setattr(cache_mod.F, "linear", spy)
    monkeypatch.setattr(cache_mod, "default_chunk_size", lambda vocab: 16)
    body = nn.Identity()
    head = torch.randn(4096, 8)
    cache_teacher(body, DataLoader(TensorDataset(torch.randn(100, 8)), batch_size=50), tmp_path / "c", top_k=4,
                  head=head)
    assert rows_seen and max(rows_seen) == 16 and sum(rows_seen) == 100


@pytest.mark.parametrize("loss", ["entropy", "entropy_sparse"])
def test_training_from_a_full_cache_reproduces_online_kd(tmp_path, loss):
    """top_k = V, fp32 log-probabilities: the same seed gives the same losses (within 1e-5) and weights."""
    x, y, teacher, student = setup(96)
    T = 4.0
    cache = cache_teacher(teacher, DataLoader(TensorDataset(x, y), batch_size=32), tmp_path / "c", top_k=V,
                          temperature=T, dtype=torch.float32)

    def run(t):
        torch.manual_seed(3)
        s = copy.deepcopy(student)
        d = Distiller(t, s, loss=loss if t is teacher else SparseKDLoss(temperature=T, top_k=V), lr=1e-2)
        hist = d.fit(DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True), 4, progress=False)
        return [h["loss"] for h in hist], s

    online, s1 = run(teacher)
    offline, s2 = run(cache)
    diff = max(abs(a - b) for a, b in zip(online, offline))
    print(f"max |online - offline| epoch loss: {diff:.3g}")
    assert diff <= 1e-5, (online, offline)
    for a, b in zip(s1.parameters(), s2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_distiller_checks_the_cache(tmp_path):
    x, y, teacher, student = setup(40)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    cache = cache_teacher(teacher, loader, tmp_path / "c", top_k=4, temperature=4.0)
    with pytest.raises(ValueError, match="entropy_sparse"):
        Distiller(cache, student)
    with pytest.raises(ValueError, match="features"):
        Distiller(cache, student, loss="entropy_sparse", features={"0": "0"})
    d = Distiller(cache, student, loss="entropy_sparse")
    with pytest.raises(ValueError, match="holds 40 samples but the loader's dataset has 39"):
        d.fit(DataLoader(TensorDataset(x[:39], y[:39]), batch_size=8), 1, progress=False)
    wrong_vocab = nn.Sequential(nn.Linear(D_IN, V + 1))
    with pytest.raises(ValueError, match=f"vocabulary of {V}"):
        Distiller(cache, wrong_vocab, loss="entropy_sparse").fit(loader, 1, progress=False)
    with pytest.raises(ValueError, match="temperature 4.0"):
        Distiller(cache, student, loss=SparseKDLoss(temperature=2.0)).fit(loader, 1, progress=False)
    with pytest.raises(TypeError, match="DataLoader"):
        d.fit([(x, y)], 1, progress=False)
    hist = d.fit(loader, 2, val_loader=loader, progress=False)
    assert hist[-1]["val_accuracy"] >= 0 and hist[-1]["loss"] > 0 and hist[-1]["val_loss"] > 0
    other = d.evaluate(DataLoader(TensorDataset(x[:25], y[:25]), batch_size=8))  # not the cached dataset
    with torch.no_grad():
        acc = float((student(x[:25]).argmax(1) == y[:25]).float().mean())
    assert other == {"accuracy": pytest.approx(acc)}


def test_bad_caches_raise_clearly(tmp_path):
    x, y, teacher, _ = setup(20)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    path = tmp_path / "c"
    cache_teacher(teacher, loader, path, top_k=3)
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps(dict(manifest, version=99)))
    with pytest.raises(ValueError, match="version 99"):
        TeacherCache(path)
    (path / "manifest.json").write_text(json.dumps(dict(manifest, num_samples=21)))
    with pytest.raises(ValueError, match="num_samples"):
        TeacherCache(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="manifest"):
        TeacherCache(path)
    os.remove(path / "manifest.json")
    with pytest.raises(ValueError, match="did not finish"):
        TeacherCache(path)
    cache_teacher(teacher, loader, path, top_k=3)
    shard = path / "shard-00000.fd"
    blob = bytearray(shard.read_bytes())
    blob[-1] ^= 0xFF
    shard.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="checksum|modified"):
        TeacherCache(path)[[0]]
    with pytest.raises(ValueError, match="top_k"):
        cache_teacher(teacher, loader, tmp_path / "d", top_k=0)
    with pytest.raises(ValueError, match="dtype"):
        cache_teacher(teacher, loader, tmp_path / "d", dtype=torch.int8)
    fresh = cache_teacher(teacher, loader, tmp_path / "e", top_k=3)
    with pytest.raises(IndexError):
        fresh[[20]]


def test_sparse_kd_loss_module_matches_the_function():
    s, t = torch.randn(5, 50, requires_grad=True), torch.randn(5, 50)
    top = torch.log_softmax(t / 2.0, -1).topk(8)
    got = SparseKDLoss(temperature=2.0, alpha=1.0, top_k=8)(s, t)
    want = fd.sparse_kd_loss(s, top.indices, top.values, values="log_probs", tail="bucket", temperature=2.0,
                             alpha=1.0)
    torch.testing.assert_close(got, want)
