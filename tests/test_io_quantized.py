"""save / load of quantized content: QuantizedTensor entries (every width, scheme and granularity) and models whose
Linear layers were replaced by Int8Linear, loaded into the plain architecture; bit-exact, tamper-evident."""
from __future__ import annotations

import copy
import json
import struct

import pytest
import torch
from torch import nn

import fastdistill as fd
from fastdistill.nn import Int8Linear


@pytest.mark.parametrize("bits,scheme,granularity,shape", [
    (8, "symmetric", "channel", (33, 17)),
    (8, "asymmetric", "tensor", (5, 7, 3)),
    (4, "symmetric", "group", (6, 256)),
    (2, "asymmetric", "channel", (9, 13)),
    (1, "symmetric", "tensor", (31,)),
    (8, "log2", "channel", (0, 5)),
])
def test_quantized_tensor_round_trip(tmp_path, gen, bits, scheme, granularity, shape):
    x = torch.randn(shape, generator=gen).to(torch.bfloat16)
    q = fd.quantize(x, bits, scheme=scheme, granularity=granularity, group_size=128)
    path = tmp_path / "q.fd"
    fd.save({"w": q, "plain": torch.arange(5)}, path)
    back = fd.load(path)
    assert isinstance(back["w"], fd.QuantizedTensor) and repr(back["w"]) == repr(q)
    for name in ("codes", "scale", "zero_point"):
        assert torch.equal(getattr(back["w"], name), getattr(q, name))
    assert torch.equal(back["w"].dequantize(), q.dequantize()) and back["w"].dequantize().dtype == torch.bfloat16
    assert torch.equal(back["plain"], torch.arange(5))
    assert fd.model_size({"w": q}) == q.nbytes


def tampered_meta(path, edit):
    """Rewrites the file's metadata through ``edit`` (keeping the data checksum valid)."""
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    enc = json.loads(header["__metadata__"]["encodings"])
    edit(enc)
    header["__metadata__"]["encodings"] = json.dumps(enc)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + blob[8 + n:])


@pytest.mark.parametrize("edit", [
    lambda enc: enc["w"]["meta"].update(bits=4),
    lambda enc: enc["w"]["meta"].update(granularity="group", group_size=7),
    lambda enc: enc["w"].update(shape=[12, 7]),
    lambda enc: enc["w"]["meta"].update(dtype="int64"),
    lambda enc: enc["w"]["meta"].pop("scheme"),
])
def test_quantized_tensor_inconsistent_metadata_raises(tmp_path, gen, edit):
    path = tmp_path / "q.fd"
    fd.save({"w": fd.quantize(torch.randn(12, 8, generator=gen), 8, granularity="channel")}, path)
    tampered_meta(path, edit)
    with pytest.raises(ValueError, match="file: entry 'w' is malformed"):
        fd.load(path)


def test_int8_model_round_trip_into_plain_architecture(tmp_path, gen):
    model = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 48, bias=False), nn.GELU(), nn.Linear(48, 6))
    x = torch.randn(7, 40, generator=gen)
    calib = [torch.randn(16, 40, generator=gen)]
    q = fd.compress.quantize(copy.deepcopy(model), calibration=calib, exclude=["4"])
    path = tmp_path / "int8.fd"
    fd.save(q, path)
    assert fd.model_size(q) < fd.model_size(model) / 3
    loaded = fd.load(path, copy.deepcopy(model))
    assert isinstance(loaded[0], Int8Linear) and isinstance(loaded[2], Int8Linear) and type(loaded[4]) is nn.Linear
    assert loaded[2].bias is None
    assert torch.equal(loaded(x), q(x))


def test_int8_module_mismatch_raises(tmp_path):
    q = nn.Sequential(Int8Linear.from_float(nn.Linear(8, 4)))
    path = tmp_path / "int8.fd"
    fd.save(q, path)
    with pytest.raises(ValueError, match="holds an Int8Linear"):
        fd.load(path, nn.Sequential(nn.ReLU()))


def test_pruned_integer_codes_stored_sparse(tmp_path, gen):
    codes = torch.randint(-127, 128, (64, 100), generator=gen, dtype=torch.int8)
    codes[torch.rand(64, 100, generator=gen) < 0.9] = 0
    dense = torch.randint(-5, 5, (8, 8), generator=gen, dtype=torch.int32)
    path = tmp_path / "codes.fd"
    fd.save({"codes": codes, "dense": dense}, path)
    back = fd.load(path)
    assert torch.equal(back["codes"], codes) and back["codes"].dtype == torch.int8
    assert torch.equal(back["dense"], dense)
    assert fd.model_size({"codes": codes}) == 64 * 100 // 8 + int((codes != 0).sum())
