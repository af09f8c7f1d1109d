"""save / load / model_size: bit-exact round trips, compact sparse storage, safetensors-compatible layout, and
ValueError on truncated or modified files."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from torch import nn

import fastdistill as fd
from fastdistill.nn import SparseLinear


def bits_equal(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def mlp():
    return nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 48), nn.GELU(), nn.Linear(48, 6))


@pytest.mark.parametrize("sparsity", [0.0, 0.6, 0.9, 0.99])
def test_round_trip_pruned_model_bit_exact(tmp_path, gen, sparsity):
    model = mlp()
    if sparsity:
        fd.compress.prune(model, sparsity)
    x = torch.randn(5, 40, generator=gen)
    path = tmp_path / "m.fd"
    fd.save(model, path)
    state = fd.load(path)
    for k, v in model.state_dict().items():
        bits_equal(state[k], v)
    fresh = fd.load(path, mlp())
    bits_equal(fresh(x), model(x))


def test_round_trip_sparse_linear_and_shrunk_model(tmp_path, gen):
    model = mlp()
    fd.compress.prune_neurons(model, 0.5)
    model[2] = SparseLinear.from_dense(model[2], sparsity=0.9)
    x = torch.randn(3, 40, generator=gen)
    path = tmp_path / "s.fd"
    fd.save(model, path)
    loaded = fd.load(path, mlp())  # the unpruned architecture: layers are resized / swapped in
    assert isinstance(loaded[2], SparseLinear) and loaded[0].out_features == 32
    bits_equal(loaded(x), model(x))
    assert fd.model_size(model) == sum(t.numel() * t.element_size() for t in _stored(path).values())


def _stored(path):
    """Tensors as a plain safetensors reader would see them (parsed by hand)."""
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__")
    names = {"F32": torch.float32, "I64": torch.int64, "I16": torch.int16, "U8": torch.uint8, "BF16": torch.bfloat16,
             "I32": torch.int32, "I8": torch.int8, "BOOL": torch.bool}
    out = {}
    for k, info in header.items():
        b, e = info["data_offsets"]
        raw = bytearray(blob[8 + n + b:8 + n + e])
        out[k] = torch.frombuffer(raw, dtype=names[info["dtype"]]).reshape(info["shape"]) if raw else None
    return out


def test_sparse_weight_entries_and_file_size(tmp_path, gen):
    w = torch.randn(4096, 4096, generator=gen)
    fd.prune_(w, 0.9)
    sw = fd.SparseWeight.from_dense(w)
    for entry, name in ((w, "dense"), (sw, "sparse")):
        path = tmp_path / f"{name}.fd"
        fd.save({"w": entry}, path)
        size = path.stat().st_size
        assert size <= 0.15 * 4096 * 4096 * 4, size / (4096 * 4096 * 4)
        back = fd.load(path)["w"]
        if name == "dense":
            bits_equal(back, w)
        else:
            assert isinstance(back, fd.SparseWeight)
            bits_equal(back.to_dense(), sw.to_dense())
            assert torch.equal(back.indptr, sw.indptr) and torch.equal(back.indices, sw.indices)


def test_int8_sparse_weight_file_size(tmp_path, gen):
    w = torch.randn(4096, 4096, generator=gen)
    fd.prune_(w, 0.9)
    q = fd.SparseWeight.from_dense(w, torch.int8)
    path = tmp_path / "q.fd"
    fd.save({"w": q}, path)
    assert path.stat().st_size <= 0.08 * 4096 * 4096 * 4, path.stat().st_size / (4096 * 4096 * 4)
    back = fd.load(path)["w"]
    assert back.dtype == torch.int8
    for a, b in ((back.indptr, q.indptr), (back.indices, q.indices), (back.values, q.values), (back.scale, q.scale)):
        bits_equal(a, b)


def test_round_trip_int8_sparse_linear(tmp_path, gen):
    model = mlp()
    model[2] = SparseLinear.from_dense(model[2], sparsity=0.9, dtype=torch.int8)
    x = torch.randn(3, 40, generator=gen)
    path = tmp_path / "q.fd"
    fd.save(model, path)
    loaded = fd.load(path, mlp())
    assert isinstance(loaded[2], SparseLinear) and loaded[2].values.dtype == torch.int8
    bits_equal(loaded(x), model(x))
    assert fd.model_size(model) == sum(t.numel() * t.element_size() for t in _stored(path).values())
    state = fd.load(path)
    bits_equal(state["2.scale"], model[2].scale)


def test_csr_chosen_at_very_high_sparsity(tmp_path, gen):
    w = torch.zeros(300, 70000)
    w[torch.randint(0, 300, (500,), generator=gen), torch.randint(0, 70000, (500,), generator=gen)] = 1.5
    path = tmp_path / "c.fd"
    fd.save({"w": w, "b": torch.randn(7, dtype=torch.bfloat16), "n": torch.tensor(3)}, path)
    state = fd.load(path)
    bits_equal(state["w"], w)
    assert state["n"].item() == 3 and state["b"].dtype == torch.bfloat16
    assert path.stat().st_size < 500 * 10 + 301 * 8 + 2000  # CSR with int32 columns, not a 2.6 MB bitmask


def test_negative_zero_kept_dense(tmp_path):
    w = torch.zeros(64, 64)
    w[0, 0] = -0.0
    w[1, 1] = 1.0
    path = tmp_path / "z.fd"
    fd.save({"w": w}, path)
    bits_equal(fd.load(path)["w"], w)


def test_corrupt_files_raise(tmp_path, gen):
    model = mlp()
    fd.compress.prune(model, 0.9)
    path = tmp_path / "m.fd"
    fd.save(model, path)
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    cases = {
        "short": blob[:5],
        "truncated header": blob[: 8 + n // 2],
        "truncated data": blob[:-10],
        "flipped data byte": blob[:-100] + bytes([blob[-100] ^ 1]) + blob[-99:],
        "bad header length": struct.pack("<Q", 10**12) + blob[8:],
        "garbage header": blob[:8] + b"{" * n + blob[8 + n:],
    }
    for what, data in cases.items():
        bad = tmp_path / "bad.fd"
        bad.write_bytes(data)
        with pytest.raises(ValueError):
            fd.load(bad)
        print("raised for", what)
    header = json.loads(blob[8:8 + n])
    first = next(k for k in header if k != "__metadata__")
    header[first]["shape"] = [3, 3]  # offsets no longer match the shape
    text = json.dumps(header).encode()
    (tmp_path / "h.fd").write_bytes(struct.pack("<Q", len(text)) + text + blob[8 + n:])
    with pytest.raises(ValueError, match="malformed"):
        fd.load(tmp_path / "h.fd")


def test_model_size_and_errors(tmp_path):
    assert fd.model_size(nn.Linear(1000, 1000)) == 4004000
    lin = nn.Linear(1000, 1000)
    fd.compress.prune(lin, 0.9)
    # weight: bitmask + 10% of the values; weight_mask: one bit per element
    assert fd.model_size(lin) == 125000 + 100000 * 4 + 4000 + 125000
    path = tmp_path / "l.fd"
    fd.save(lin, path)
    assert torch.equal(fd.load(path)["weight_mask"], lin.weight_mask)
    with pytest.raises(TypeError, match="model"):
        fd.save(3, tmp_path / "x.fd")
    with pytest.raises(RuntimeError, match="size mismatch|Missing|Unexpected"):
        fd.load(path, nn.Sequential(nn.Linear(2, 2)))
