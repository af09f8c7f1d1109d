"""int4 weights: the int4_linear op on every backend against the reference (W4A16 and W4A8, awkward shapes),
Int4Linear, QuantizedEmbedding and Int8Conv2d against their float layers, compress.quantize for 4 bits, convs and
embeddings, fastdistill.save / load, state_dict and torch.jit.trace."""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastdistill as fd
from fastdistill._dispatch import backend_kernel
from fastdistill.backends.python.int4 import int4_linear as reference_int4_linear
from fastdistill.int4 import pack_parts
from fastdistill.nn import Int4Linear, Int8Conv2d, QuantizedEmbedding


def rel_err(y, want):
    return float((y - want).norm() / want.norm())


def random_int4(gen, n, k, g):
    codes = torch.randint(0, 256, (n, k // 2), generator=gen, dtype=torch.uint8)
    codes = torch.where(codes & 0xF == 0, codes | 1, codes)  # field 0 (code -8) is outside the symmetric range
    codes = torch.where(codes >> 4 == 0, codes | 0x10, codes)
    scale = torch.rand(n, k // g, generator=gen) * 0.1 + 0.01
    return codes, scale


SHAPES = [(1, 64, 8, 64), (3, 256, 70, 128), (17, 384, 33, 128), (40, 96, 129, 32), (0, 64, 16, 64),
          (5, 1536, 64, 128)]


@pytest.mark.parametrize("act_int8", [False, True])
@pytest.mark.parametrize("m,k,n,g", SHAPES)
def test_int4_linear_matches_reference(backend, gen, m, k, n, g, act_int8):
    if backend_kernel("int4_linear", fd.get_backend()) is None:
        pytest.skip(f"no {fd.get_backend()} kernel for int4_linear")
    codes, scale = random_int4(gen, n, k, g)
    x = torch.randn(m, k, generator=gen)
    bias = torch.randn(n, generator=gen) if n % 2 else None
    w = pack_parts(codes, scale, g)
    want = reference_int4_linear(x, codes, scale, w.packed, bias, g, act_int8)
    got = fd.int4_linear(x.to(backend), w, bias, activations="int8" if act_int8 else "float")
    assert got.shape == (m, n) and got.dtype == torch.float32
    # fp32 sums in another order: relative to the size of the products
    bound = x.abs() @ (scale.repeat_interleave(g, 1) * 8).t()  # |x| . |w| bounds every partial sum
    tol = 1e-5 * max(float(bound.max()) if bound.numel() else 0.0, 1.0)
    torch.testing.assert_close(got.cpu(), want, rtol=0, atol=tol)


def test_int4_linear_bf16_and_noncontiguous(gen):
    codes, scale = random_int4(gen, 48, 256, 128)
    w = pack_parts(codes, scale, 128)
    x = torch.randn(256, 6, generator=gen).t()  # non-contiguous rows
    want = fd.int4_linear(x.contiguous(), w, activations="float")
    torch.testing.assert_close(fd.int4_linear(x, w, activations="float"), want)
    y = fd.int4_linear(x.bfloat16(), w, activations="float")
    assert y.dtype == torch.float32
    assert rel_err(y, want) < 1e-2
    x3 = torch.randn(2, 3, 256, generator=gen)
    assert fd.int4_linear(x3, w).shape == (2, 3, 48)


def test_int4_linear_errors(gen):
    codes, scale = random_int4(gen, 8, 64, 32)
    w = pack_parts(codes, scale, 32)
    with pytest.raises(ValueError, match="x:"):
        fd.int4_linear(torch.randn(2, 63), w)
    with pytest.raises(ValueError, match="activations"):
        fd.int4_linear(torch.randn(2, 64), w, activations="int4")
    with pytest.raises(ValueError, match="bias"):
        fd.int4_linear(torch.randn(2, 64), w, torch.randn(9))
    with pytest.raises(TypeError, match="qweight"):
        fd.int4_linear(torch.randn(2, 64), codes)
    with pytest.raises(ValueError, match="scale"):
        pack_parts(codes, scale[:, :1], 32)
    with pytest.raises(ValueError, match="group_size"):
        pack_parts(codes, scale, 48)
    with pytest.raises(ValueError, match="granularity"):
        fd.prepack_int4_weight(fd.quantize(torch.randn(8, 64), 4, granularity="channel"))


def test_int4linear_module(gen):
    lin = nn.Linear(256, 40)
    q = Int4Linear.from_float(lin, group_size=64)
    x = torch.randn(7, 256, generator=gen)
    qt = fd.quantize(lin.weight, 4, granularity="group", group_size=64)
    assert torch.equal(q.weight, qt.dequantize())
    want = F.linear(x, q.weight, lin.bias)
    for act in ("float", "int8"):
        q.activations = act
        tol = 1e-5 if act == "float" else 2e-2
        assert rel_err(q(x), want) < tol
    assert "group_size=64" in repr(q)
    assert Int4Linear.from_float(nn.Linear(48, 8)).group_size == 48  # a row shorter than a group is one group
    with pytest.raises(ValueError, match="group_size"):
        Int4Linear.from_float(nn.Linear(100, 8), group_size=64)
    sd = q.state_dict()
    assert set(sd) == {"weight_int4", "weight_scale", "bias"} and sd["weight_int4"].shape == (40, 128)
    fresh = Int4Linear(256, 40, group_size=64, activations="int8")
    fresh.load_state_dict(sd)
    assert torch.equal(fresh(x), q(x))
    q.half()
    assert q.weight_scale.dtype == torch.float32 and q(x.half()).dtype == torch.float16


def test_quantized_embedding(gen):
    emb = nn.Embedding(30, 64, padding_idx=0)
    idx = torch.randint(0, 30, (4, 5), generator=gen)
    for bits, tol in ((8, 0.01), (4, 0.15)):
        q = QuantizedEmbedding.from_float(emb, bits=bits, group_size=32)
        assert torch.equal(q(idx), q.weight[idx])
        assert rel_err(q(idx), emb(idx).detach()) < tol
        assert q.padding_idx == 0 and q(idx).shape == (4, 5, 64)
    with pytest.raises(ValueError, match="bits"):
        QuantizedEmbedding(10, 8, bits=2)
    with pytest.raises(ValueError, match="max_norm"):
        QuantizedEmbedding.from_float(nn.Embedding(10, 8, max_norm=1.0))


@pytest.mark.parametrize("kw", [dict(kernel_size=3, padding=1), dict(kernel_size=(3, 2), stride=2, dilation=(1, 2),
                                                                     padding=(2, 1)),
                                dict(kernel_size=1), dict(kernel_size=3, padding="same", bias=False),
                                dict(kernel_size=5, stride=3)])
def test_int8_conv2d_matches_im2col_reference(gen, kw):
    conv = nn.Conv2d(5, 7, **kw)
    q = Int8Conv2d.from_float(conv)
    x = torch.randn(3, 5, 11, 10, generator=gen)
    y = q(x)
    assert y.shape == conv(x).shape and y.is_contiguous(memory_format=torch.channels_last)
    # the same computation spelled with F.unfold and int8_linear on the (C, kh, kw)-ordered weight
    w = fd.prepack_int8_weight(fd.quantize(conv.weight.detach().reshape(7, -1), 8, granularity="channel"))
    assert torch.equal(q.weight, fd.quantize(conv.weight.detach().permute(0, 2, 3, 1).reshape(7, -1), 8,
                                             granularity="channel").dequantize().reshape(7, *q.kernel_size, 5)
                       .permute(0, 3, 1, 2))
    cols = F.unfold(x, q.kernel_size, q.dilation, q.padding, q.stride).transpose(1, 2).reshape(-1, w.shape[0])
    ref = fd.int8_linear(cols, w, conv.bias).reshape(3, y.shape[2], y.shape[3], 7).permute(0, 3, 1, 2)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)  # same codes and per-patch scales, other sum order
    assert rel_err(y, conv(x).detach()) < 0.02
    assert torch.equal(q(x.contiguous(memory_format=torch.channels_last)), y)


def test_int8_conv2d_errors():
    with pytest.raises(ValueError, match="groups"):
        Int8Conv2d.from_float(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="padding_mode"):
        Int8Conv2d.from_float(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    q = Int8Conv2d.from_float(nn.Conv2d(4, 4, 3))
    with pytest.raises(ValueError, match="x:"):
        q(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="smaller"):
        q(torch.randn(1, 4, 2, 2))


def test_compress_quantize_int4_conv_embedding_round_trip(tmp_path, gen):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(40, 64)
            self.conv = nn.Conv2d(1, 6, 3, padding=1)
            self.fc1, self.fc2 = nn.Linear(64 + 6 * 16, 128), nn.Linear(128, 10)

        def forward(self, ids, img):
            h = torch.cat([self.emb(ids).mean(1), torch.relu(self.conv(img)).flatten(1)], -1)
            return self.fc2(torch.relu(self.fc1(h)))

    model = Net().eval()
    ids, img = torch.randint(0, 40, (3, 5), generator=gen), torch.randn(3, 1, 4, 4, generator=gen)
    q = fd.compress.quantize(model, bits=4, group_size=32, include=[nn.Linear, nn.Embedding])
    assert isinstance(q.fc1, Int4Linear) and isinstance(q.emb, QuantizedEmbedding) and isinstance(q.conv, nn.Conv2d)
    assert q.fc2.group_size == 32 and q.emb.bits == 4
    with pytest.raises(ValueError, match="bits"):
        fd.compress.quantize(model, bits=4, include=[nn.Conv2d])
    q8 = fd.compress.quantize(model, include=[nn.Conv2d, "fc*"], scale_method="mse")
    assert isinstance(q8.conv, Int8Conv2d) and isinstance(q8.emb, nn.Embedding)
    for qm in (q, q8):
        want = qm(ids, img)
        assert rel_err(want, model(ids, img).detach()) < 0.2
        fd.save(qm, tmp_path / "m.fd")
        fresh = fd.load(tmp_path / "m.fd", Net().eval())
        assert torch.equal(fresh(ids, img), want)
        assert type(fresh.fc1) is type(qm.fc1) and type(fresh.conv) is type(qm.conv)


def _roundtrip(traced):
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    buf.seek(0)
    return torch.jit.load(buf)


@pytest.mark.parametrize("make", ["int4", "conv", "embedding"])
def test_traced_models_match_eager(make, gen):
    if make == "conv":
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten())
        model = fd.compress.quantize(model, include=[nn.Conv2d])
        shape = (2, 3, 8, 8)
    elif make == "int4":
        model = fd.compress.quantize(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8)), bits=4)
        for m in model.modules():
            if isinstance(m, Int4Linear):
                m.activations = "float"  # "auto" picks its route by row count when traced
        shape = (2, 64)
    else:
        model = fd.compress.quantize(nn.Sequential(nn.Embedding(20, 32), nn.Linear(32, 4)), bits=4,
                                     include=[nn.Embedding], group_size=16)
        shape = None
    model.eval()

    def sample(rows):
        if shape is None:
            return torch.randint(0, 20, (rows, 3), generator=gen)
        return torch.randn(rows, *shape[1:], generator=gen)

    with torch.no_grad():
        traced = torch.jit.trace(model, (sample(2),), check_trace=False)
        for rows in (1, 5):
            x = sample(rows)
            want = model(x)
            torch.testing.assert_close(traced(x), want, rtol=0, atol=0)
            torch.testing.assert_close(_roundtrip(traced)(x), want, rtol=0, atol=0)


def test_from_quantized_and_errors(gen):
    w = torch.randn(16, 64, generator=gen)
    q = Int4Linear.from_quantized(fd.quantize(w, 4, granularity="group", group_size=32))
    assert q.bias is None and q.group_size == 32
    with pytest.raises(ValueError, match="4-bit"):
        Int4Linear.from_quantized(fd.quantize(w, 8, granularity="group", group_size=32))
    with pytest.raises(TypeError, match="linear"):
        Int4Linear.from_float(nn.Conv1d(1, 1, 1))
    with pytest.raises(ValueError, match="activations"):
        Int4Linear(64, 8, activations="fp8")
    assert copy.deepcopy(q)(torch.ones(1, 64)).shape == (1, 16)
