"""docs/errors.md, row by row: each test is one row of its bad-input table (every function column, on every backend),
or one row of its model-file table. The hostile-file test mutates a real file a few hundred ways (more with
FASTDISTILL_FUZZ_FILES=N): every load either raises ValueError or returns the saved tensors bit for bit."""
from __future__ import annotations

import hashlib
import json
import os
import random
import struct

import pytest
import torch
from torch import nn

import fastdistill as fd
from fastdistill.int8 import PackedInt8Weight
from fastdistill.quantization import QuantizedTensor


def _operands():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 16, generator=g)
    return dict(
        x=x,
        sw=fd.SparseWeight.from_dense(x * (x.abs() > 1)),
        w8=fd.prepack_int8_weight(fd.quantize(torch.randn(4, 16, generator=g), 8, granularity="channel")),
        s=torch.randn(4, 10, generator=g),
        t=torch.randn(4, 10, generator=g),
    )


def _raises(exc, match, fn):
    with pytest.raises(exc, match=match):
        fn()


# ------------------------------------------------------------------------------------------------ bad-input table


def test_wrong_dtype(backend):
    o = _operands()
    xi = torch.randint(0, 5, (8, 16))
    for fn, name in ((lambda: fd.magnitude_mask(xi, 0.5), "x"), (lambda: fd.prune_(xi, 0.5), "x"),
                     (lambda: fd.global_magnitude_masks([o["x"], xi], 0.5), r"tensors\[1\]"),
                     (lambda: fd.nm_mask(xi), "x"), (lambda: fd.nm_mask(o["x"], 2.0, 4), "n"),
                     (lambda: fd.channel_mask(xi, 1), "x"), (lambda: fd.quantize(xi), "x"),
                     (lambda: fd.quantize(o["x"], 8.0), "bits"), (lambda: fd.fake_quantize(xi), "x"),
                     (lambda: fd.int8_mm(o["x"], o["x"]), "a"), (lambda: fd.int8_linear(xi, o["w8"]), "x"),
                     (lambda: fd.prepack_int8_weight(o["x"]), "b"),
                     (lambda: PackedInt8Weight(o["w8"].codes, o["w8"].scale.double(), o["w8"].packed, o["w8"].comp),
                      "scale"),
                     (lambda: fd.sparse_linear(xi, o["sw"]), "x"), (lambda: fd.spmm(o["sw"], xi.t()), "x"),
                     (lambda: fd.SparseWeight(o["sw"].indptr.int(), o["sw"].indices, o["sw"].values, (8, 16)),
                      "indptr"),
                     (lambda: fd.kd_loss(o["s"].long(), o["t"]), "student_logits"),
                     (lambda: fd.kd_loss(o["s"], o["t"].long()), "teacher_logits"),
                     (lambda: fd.kd_loss(o["s"], o["t"], o["s"]), "target"),
                     (lambda: fd.kd_loss(o["s"], o["t"], ignore_index=1.0), "ignore_index"),
                     (lambda: fd.sparse_kd_loss(o["s"], o["t"], o["t"]), "teacher_indices"),
                     (lambda: fd.fused_linear_kd_loss(xi, o["x"], o["x"], o["x"]), "student_hidden")):
        _raises(TypeError, name, fn)


def test_devices_mixed():
    o = _operands()
    m = {k: o[k].to("meta") for k in ("x", "t")}  # another device (no GPU needed)
    for fn, name in ((lambda: fd.global_magnitude_masks([o["x"], m["x"]], 0.5), "tensors"),
                     (lambda: fd.int8_linear(m["x"], o["w8"]), "qweight"),
                     (lambda: fd.int8_mm(m["x"].to(torch.int8), o["w8"]), "b"),
                     (lambda: fd.sparse_linear(m["x"], o["sw"]), "x"),
                     (lambda: fd.spmm(o["sw"], m["x"].t()), "x"),
                     (lambda: fd.SparseWeight(o["sw"].indptr, o["sw"].indices, o["sw"].values.to("meta"), (8, 16)),
                      "one device"),
                     (lambda: fd.kd_loss(o["s"], m["t"]), "teacher_logits"),
                     (lambda: fd.sparse_kd_loss(o["s"], torch.zeros(4, 1, dtype=torch.long, device="meta"),
                                                torch.zeros(4, 1)), "teacher_indices"),
                     (lambda: fd.fused_linear_kd_loss(o["x"], m["x"], o["x"], o["x"]), "one device")):
        _raises(ValueError, name, fn)
    q = fd.quantize(o["x"], 8)
    _raises(ValueError, "one device", lambda: QuantizedTensor(q.codes, q.scale.to("meta"), q.zero_point, bits=8,
                                                              scheme="symmetric", granularity="tensor", axis=0,
                                                              group_size=0, shape=(8, 16), dtype=torch.float32))


def test_shape_mismatch(backend):
    o = _operands()
    for fn, name in ((lambda: fd.nm_mask(torch.randn(3, 6), 2, 4), "x"),
                     (lambda: fd.quantize(o["x"], 4, granularity="group", group_size=5), "group_size"),
                     (lambda: fd.quantize(o["x"], 4, granularity="channel", axis=2), "axis"),
                     (lambda: QuantizedTensor(fd.quantize(o["x"], 8).codes, torch.ones(2), torch.zeros(1, dtype=torch.int32),
                                              bits=8, scheme="symmetric", granularity="tensor", axis=0, group_size=0,
                                              shape=(8, 16), dtype=torch.float32), "scale"),
                     (lambda: fd.int8_mm(torch.zeros(2, 3, dtype=torch.int8), torch.zeros(4, 2, dtype=torch.int8)), "b"),
                     (lambda: fd.int8_linear(torch.randn(2, 15), o["w8"]), "x"),
                     (lambda: fd.int8_linear(o["x"], o["w8"], torch.zeros(3)), "bias"),
                     (lambda: fd.prepack_int8_weight(torch.zeros(4, 3, dtype=torch.int8), torch.ones(2)), "scale"),
                     (lambda: fd.sparse_linear(torch.randn(3, 5), o["sw"]), "x"),
                     (lambda: fd.sparse_linear(o["x"], o["sw"], torch.zeros(3)), "bias"),
                     (lambda: fd.SparseWeight(o["sw"].indptr, o["sw"].indices, o["sw"].values, (9, 16)), "indptr"),
                     (lambda: fd.kd_loss(o["s"], o["t"][:, :5]), "teacher_logits"),
                     (lambda: fd.kd_loss(o["s"], o["t"], torch.zeros(3, dtype=torch.long)), "target"),
                     (lambda: fd.sparse_kd_loss(o["s"], torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 1)),
                      "teacher_indices"),
                     (lambda: fd.sparse_kd_loss(o["s"], torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, 1)),
                      "teacher_values"),
                     (lambda: fd.fused_linear_kd_loss(o["x"], torch.randn(10, 15), o["x"], torch.randn(10, 16)),
                      "student_weight")):
        _raises(ValueError, name, fn)


def test_nan(backend):
    o = _operands()
    x = o["x"].clone()
    x[0, 0] = float("nan")
    for fn in (lambda: fd.magnitude_mask(x, 0.5), lambda: fd.prune_(x.clone(), 0.5), lambda: fd.nm_mask(x),
               lambda: fd.global_magnitude_masks([o["x"], x], 3), lambda: fd.channel_mask(x, 1),
               lambda: fd.quantize(x, 4), lambda: fd.fake_quantize(x, 8)):
        _raises(ValueError, "NaN", fn)
    assert bool(fd.int8_linear(x, o["w8"])[0].isnan().all()) and bool(fd.int8_linear(x, o["w8"])[1:].isfinite().all())
    w = torch.ones(3, 16)  # every column stored: NaN reaches every output of its row
    assert bool(fd.sparse_linear(x, fd.SparseWeight.from_dense(w))[0].isnan().all())
    s = o["s"].clone().requires_grad_()
    t = o["t"].clone()
    t[2, 3] = float("nan")
    loss = fd.kd_loss(s, t, reduction="none")
    loss.sum().backward()
    assert bool(loss[2].isnan()) and bool(s.grad[2].isnan().all()) and bool(loss[[0, 1, 3]].isfinite().all())
    _raises(ValueError, "teacher_values.*NaN", lambda: fd.sparse_kd_loss(
        o["s"], torch.zeros(4, 1, dtype=torch.long), torch.full((4, 1), float("nan")), values="probs"))


def test_infinity(backend):
    o = _operands()
    x = o["x"].clone()
    x[0, 0], x[1, 1] = float("inf"), float("-inf")
    mask = fd.magnitude_mask(x, 14)
    assert bool(mask[0, 0]) and bool(mask[1, 1])  # the largest magnitudes are kept
    _raises(ValueError, "infinite", lambda: fd.quantize(x, 8))
    y = fd.int8_linear(x, o["w8"])
    assert bool(y[:2].isnan().all()) and bool(y[2:].isfinite().all())
    t = o["t"].clone()
    t[0, :3] = float("-inf")  # masked vocabulary: fine
    t[1, 0] = float("inf")   # no softmax: NaN row
    t[2] = float("-inf")     # no distribution: NaN row
    loss = fd.kd_loss(o["s"], t, reduction="none")
    assert bool(loss[0].isfinite()) and bool(loss[1].isnan()) and bool(loss[2].isnan()) and bool(loss[3].isfinite())
    assert bool(fd.kd_loss(o["s"], t[2:3].expand(4, 10), teacher_log_probs=True, reduction="none").isfinite().all())


def test_empty(backend):
    e = torch.empty(0, 16)
    assert fd.magnitude_mask(e, 0.5).shape == (0, 16) and fd.nm_mask(e).shape == (0, 16)
    assert fd.prune_(torch.empty(0), 0.5).shape == (0,)
    assert fd.quantize(e, 4).dequantize().shape == (0, 16)
    z = fd.int8_mm(torch.ones(3, 0, dtype=torch.int8), torch.ones(0, 5, dtype=torch.int8))
    assert z.shape == (3, 5) and bool((z == 0).all())
    assert fd.int8_mm(torch.ones(0, 4, dtype=torch.int8), torch.ones(4, 5, dtype=torch.int8)).shape == (0, 5)
    w8 = fd.prepack_int8_weight(torch.ones(0, 5, dtype=torch.int8), torch.ones(5))
    assert bool((fd.int8_linear(torch.randn(2, 0), w8) == 0).all())
    assert fd.sparse_linear(e, fd.SparseWeight.from_dense(torch.randn(3, 16))).shape == (0, 3)
    s = torch.randn(0, 10, requires_grad=True)
    loss = fd.kd_loss(s, torch.randn(0, 10))
    loss.backward()
    assert float(loss.detach()) == 0 and s.grad.shape == (0, 10)


def test_out_of_range_arguments(backend):
    o = _operands()
    for fn, name in ((lambda: fd.magnitude_mask(o["x"], 1.5), "sparsity"),
                     (lambda: fd.magnitude_mask(o["x"], 129), "sparsity"),
                     (lambda: fd.nm_mask(o["x"], 5, 4), "n"), (lambda: fd.channel_mask(o["x"], 1, p=0), "p"),
                     (lambda: fd.quantize(o["x"], 3), "bits"), (lambda: fd.quantize(o["x"], 8, percentile=0), "percentile"),
                     (lambda: fd.quantize(o["x"], 8, scheme="x"), "scheme"),
                     (lambda: fd.SparseWeight(o["sw"].indptr, o["sw"].indices.to(torch.int16) + 20, o["sw"].values,
                                              (8, 16)), "indices"),
                     (lambda: fd.kd_loss(o["s"], o["t"], temperature=0), "temperature"),
                     (lambda: fd.kd_loss(o["s"], o["t"], temperature=float("inf")), "temperature"),
                     (lambda: fd.kd_loss(o["s"], o["t"], alpha=1.5), "alpha"),
                     (lambda: fd.kd_loss(o["s"], o["t"], divergence="jsd", beta=1.0), "beta"),
                     (lambda: fd.kd_loss(o["s"], o["t"], torch.tensor([0, 1, 2, 10])), "target"),
                     (lambda: fd.kd_loss(o["s"], o["t"], ignore_index=2**63), "ignore_index"),
                     (lambda: fd.sparse_kd_loss(o["s"], torch.full((4, 1), 10), torch.zeros(4, 1), values="probs"),
                      "teacher_indices"),
                     (lambda: fd.sparse_kd_loss(o["s"], torch.tensor([[1, 1]] * 4), torch.full((4, 2), 0.3),
                                                values="probs"), "teacher_indices"),
                     (lambda: fd.sparse_kd_loss(o["s"], torch.tensor([[1, 2]] * 4), torch.full((4, 2), 0.6),
                                                values="probs"), "teacher_values"),
                     (lambda: fd.compress.prune(nn.Linear(3, 3), 2.0), "sparsity")):
        _raises(ValueError, name, fn)


# ------------------------------------------------------------------------------------------------ model files


def _saved(tmp_path):
    model = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 6))
    fd.compress.prune(model, 0.9)
    state = {**model.state_dict(), "q": fd.quantize(torch.randn(6, 12), 4, granularity="channel"),
             "s": fd.SparseWeight.from_dense(torch.randn(5, 7) * (torch.rand(5, 7) > 0.7))}
    path = tmp_path / "ok.fd"
    fd.save(state, path)
    return path, path.read_bytes()


def test_truncated_file(tmp_path):
    path, blob = _saved(tmp_path)
    for n in range(0, len(blob), max(1, len(blob) // 97)):
        path.write_bytes(blob[:n])
        _raises(ValueError, "file", lambda: fd.load(path))


def test_tampered_file(tmp_path):
    path, blob = _saved(tmp_path)
    (n,) = struct.unpack("<Q", blob[:8])
    for pos in range(8 + n, len(blob), max(1, (len(blob) - 8 - n) // 50)):
        path.write_bytes(blob[:pos] + bytes([blob[pos] ^ 0x10]) + blob[pos + 1:])
        _raises(ValueError, "checksum", lambda: fd.load(path))


def test_newer_version_file(tmp_path):
    path, blob = _saved(tmp_path)
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header["__metadata__"]["version"] = "2"
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + blob[8 + n:])
    _raises(ValueError, "version 2, newer than version 1", lambda: fd.load(path))


def test_oversized_file(tmp_path):
    path = tmp_path / "big.fd"
    fd.save({"z": torch.zeros(1, 2**26)}, path)  # 256 MiB of zeros stored in a few hundred bytes
    _raises(ValueError, "max_bytes", lambda: fd.load(path, max_bytes=2**20))
    assert fd.load(path)["z"].shape == (1, 2**26)  # within the default (at least 256 MiB)


def test_file_not_matching_the_model(tmp_path):
    path, _ = _saved(tmp_path)
    state = fd.load(path)
    model_path = tmp_path / "m.fd"
    fd.save({k: v for k, v in state.items() if k[0] in "02"}, model_path)
    _raises(RuntimeError, "size mismatch|Missing|Unexpected", lambda: fd.load(model_path, nn.Sequential(nn.Linear(2, 2))))


FUZZ_FILES = int(os.environ.get("FASTDISTILL_FUZZ_FILES", "400"))


def _mutations(blob: bytes, rng: random.Random):
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    keys = [k for k in header if k != "__metadata__"]

    def pack(h, d=data, digest=True):
        if digest:
            h.setdefault("__metadata__", {})
            if isinstance(h["__metadata__"], dict):
                h["__metadata__"]["sha256"] = hashlib.sha256(d).hexdigest()
        text = json.dumps(h).encode()
        return struct.pack("<Q", len(text)) + text + d

    values = [0, -1, 1, 2**31, 2**63, 10**30, 1.5, "1", None, [], {}, True, [1, 2], [-1], [2**62, 2**62]]
    while True:
        kind = rng.randrange(6)
        h = json.loads(json.dumps(header))
        if kind == 0:  # a random byte anywhere
            pos = rng.randrange(len(blob))
            yield blob[:pos] + bytes([rng.randrange(256)]) + blob[pos + 1:]
        elif kind == 1:  # a field of a tensor entry replaced (the checksum kept valid)
            k = rng.choice(keys)
            h[k][rng.choice(["dtype", "shape", "data_offsets"])] = rng.choice(values + ["F16", "U8", "I64", "BOOL"])
            yield pack(h)
        elif kind == 2:  # an encoding field replaced
            enc = json.loads(h["__metadata__"]["encodings"])
            name = rng.choice(sorted(enc))
            field = rng.choice(["kind", "shape", "as", "meta"])
            enc[name][field] = rng.choice(values + ["csr", "bits", "bitmask", "quantized", "dense", [3, 3], [0]])
            h["__metadata__"]["encodings"] = json.dumps(enc)
            yield pack(h)
        elif kind == 3:  # the data changed consistently (checksum recomputed): values, indices, row pointers
            pos = rng.randrange(len(data))
            d = data[:pos] + bytes([rng.randrange(256)]) + data[pos + 1:]
            yield pack(h, d)
        elif kind == 4:  # an entry dropped or duplicated under another name
            k = rng.choice(keys)
            if rng.random() < 0.5:
                h.pop(k)
            else:
                h[k + "x"] = h[k]
            yield pack(h)
        else:  # quantized metadata changed
            enc = json.loads(h["__metadata__"]["encodings"])
            meta = enc["q"]["meta"]
            meta[rng.choice(sorted(meta))] = rng.choice(values + ["asymmetric", "log2", "group", "float16", 8, 4])
            h["__metadata__"]["encodings"] = json.dumps(enc)
            yield pack(h)


def test_hostile_files_raise_value_error_or_load_exactly(tmp_path):
    path, blob = _saved(tmp_path)
    good = fd.load(path)
    rng = random.Random(0)
    outcomes = {"ValueError": 0, "loaded": 0}
    gen = _mutations(blob, rng)
    for _ in range(FUZZ_FILES):
        path.write_bytes(next(gen))
        try:
            state = fd.load(path)
        except ValueError:
            outcomes["ValueError"] += 1
            continue
        outcomes["loaded"] += 1  # a change the format tolerates (e.g. a different but valid value): still sane
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                assert v.numel() < 10**7
            elif isinstance(v, QuantizedTensor):
                v.dequantize()
            elif isinstance(v, fd.SparseWeight):
                fd.sparse_linear(torch.randn(2, v.in_features), v)
    print(outcomes, "of", FUZZ_FILES, "hostile files; good entries:", len(good))
    assert outcomes["ValueError"] > FUZZ_FILES // 2
