"""Int8Linear and compress.quantize: conversion, state_dict round trip, filters, and accuracy against fp32 (with
quantize_dynamic's error printed beside ours)."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import fastdistill as fd
from fastdistill.nn import Int8Linear


def rel_err(y, want):
    return float((y - want).norm() / want.norm())


def fbgemm_model(model):
    return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def test_from_float_matches_int8_linear(gen):
    lin = nn.Linear(70, 33)
    q = Int8Linear.from_float(lin)
    x = torch.randn(5, 70, generator=gen)
    qw = fd.quantize(lin.weight, 8, granularity="channel")
    want = fd.int8_linear(x, fd.prepack_int8_weight(qw), lin.bias)
    assert torch.equal(q(x), want)
    assert torch.equal(q.weight_int8, qw.codes) and torch.equal(q.weight_scale, qw.scale)
    r = repr(q)
    assert "bits=8" in r and "(33, 70)" in r and "33 fp32 scales" in r
    assert q(x.bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtype_conversion_keeps_fp32_scales(gen, dtype):
    lin = nn.Linear(40, 24)
    x = torch.randn(6, 40, generator=gen)
    q = Int8Linear.from_float(lin, outlier_channels=torch.tensor([3]))
    want = q(x.to(dtype))
    q.to(dtype)
    assert q.weight_scale.dtype == q.bias.dtype == q.outlier_weight.dtype == torch.float32
    got = q(x.to(dtype))
    assert got.dtype == dtype and torch.equal(got, want)


def test_state_dict_round_trip(gen):
    lin = nn.Linear(40, 24)
    q = Int8Linear.from_float(lin, outlier_channels=torch.tensor([3, 17]))
    sd = q.state_dict()
    assert set(sd) == {"weight_int8", "weight_scale", "bias", "outlier_channels", "outlier_weight"}
    assert sd["weight_int8"].dtype == torch.int8
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    fresh = Int8Linear(40, 24)
    fresh.load_state_dict(torch.load(buf))
    x = torch.randn(6, 40, generator=gen)
    assert torch.equal(fresh(x), q(x))
    assert fresh.outlier_channels.tolist() == [3, 17]


def test_load_repacks(gen):
    a, b = Int8Linear.from_float(nn.Linear(16, 8)), Int8Linear.from_float(nn.Linear(16, 8))
    x = torch.randn(3, 16, generator=gen)
    a(x)  # packs a's weight
    a.load_state_dict(b.state_dict())
    assert torch.equal(a(x), b(x))


def test_granularity_tensor_and_errors():
    lin = nn.Linear(8, 4)
    q = Int8Linear.from_float(lin, granularity="tensor")
    assert torch.all(q.weight_scale == q.weight_scale[0]) and "4 fp32 scales" in repr(q)
    with pytest.raises(ValueError, match="granularity"):
        Int8Linear.from_float(lin, granularity="group")
    with pytest.raises(TypeError, match="linear"):
        Int8Linear.from_float(nn.Conv1d(1, 1, 1))
    with pytest.raises(ValueError, match="outlier_channels"):
        Int8Linear.from_float(lin, outlier_channels=[8])
    with pytest.raises(ValueError, match="x:"):
        q(torch.randn(2, 7))
    with pytest.raises(TypeError, match="x:"):
        q(torch.ones(2, 8, dtype=torch.int32))


def test_quantize_filters_and_copy():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 4)))
    q = fd.compress.quantize(model)
    assert [type(m).__name__ for m in (q[0], q[2][0], q[2][1])] == ["Int8Linear"] * 3
    assert isinstance(model[0], nn.Linear)  # not in place by default
    q = fd.compress.quantize(model, include=["2.*"], exclude=["2.1"])
    assert isinstance(q[0], nn.Linear) and isinstance(q[2][0], Int8Linear) and isinstance(q[2][1], nn.Linear)
    same = fd.compress.quantize(model, inplace=True)
    assert same is model and isinstance(model[0], Int8Linear)
    with pytest.raises(ValueError, match="bits"):
        fd.compress.quantize(model, bits=2)


def test_outlier_channels_accuracy(gen):
    """Gaussian activations with 4 of 512 channels 30x larger: calibration finds them and keeps them in fp32."""
    k, n = 512, 256
    big = torch.randperm(k, generator=gen)[:4]

    def acts(m):
        x = torch.randn(m, k, generator=gen)
        x[:, big] *= 30
        return x

    model = nn.Sequential(nn.Linear(k, n))
    x = acts(64)
    with torch.no_grad():
        want = model(x)
        plain = fd.compress.quantize(model)(x)
        ours = fd.compress.quantize(model, calibration=[acts(128), acts(128)])(x)
        peer = fbgemm_model(model)(x)
    print(f"relative error: fastdistill {rel_err(ours, want):.4%} (no calibration {rel_err(plain, want):.4%}), "
          f"quantize_dynamic {rel_err(peer, want):.4%}")
    found = fd.compress.quantize(model, calibration=[acts(128)])[0].outlier_channels
    assert sorted(found.tolist()) == sorted(big.tolist())
    assert rel_err(ours, want) <= 0.01


def test_digits_mlp_accuracy():
    from fastdistill import demo

    data = demo.load_digits_split(0)
    torch.manual_seed(0)
    model = demo.mlp(128)
    demo.train_alone(model, demo.digits_loader(data[0], data[1], 0), epochs=8, lr=3e-3)
    x_te, y_te = data[2], data[3]
    fp32 = demo.accuracy(model, x_te, y_te)
    ours = demo.accuracy(fd.compress.quantize(model), x_te, y_te)
    peer = demo.accuracy(fbgemm_model(model), x_te, y_te)
    print(f"digits accuracy: fp32 {fp32:.4f}, fastdistill int8 {ours:.4f}, quantize_dynamic {peer:.4f}")
    assert abs(ours - fp32) <= 0.005


def test_transformer_encoder(gen, monkeypatch):
    layer = nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, batch_first=True, dropout=0.0).eval()
    q = fd.compress.quantize(layer)
    assert isinstance(q.linear1, Int8Linear) and isinstance(q.self_attn.out_proj, nn.Linear)
    x = torch.randn(2, 10, 64, generator=gen)
    calls = []
    real = fd.nn.int8.linear_checked
    monkeypatch.setattr(fd.nn.int8, "linear_checked", lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        assert rel_err(q(x), layer(x)) < 0.02
    assert calls  # ran the int8 layers, not the fused fp32 fast path on their dequantized .weight


def test_torch_compile_fullgraph(gen):
    q = Int8Linear.from_float(nn.Linear(64, 32))
    x = torch.randn(5, 64, generator=gen)
    with torch.no_grad():
        assert torch.equal(torch.compile(q, fullgraph=True)(x), q(x))


def test_eager_fast_path_respects_forced_backend(gen, monkeypatch):
    from fastdistill.backends.native import int8 as native_int8

    if fd.info()["backends"]["native"]["usable"] is not True:
        pytest.skip("native backend unavailable")
    q = Int8Linear.from_float(nn.Linear(40, 24))
    x = torch.randn(3, 40, generator=gen)
    want = q(x)
    calls = []
    real = native_int8.linear_prepacked
    monkeypatch.setattr(native_int8, "linear_prepacked", lambda *a: calls.append(1) or real(*a))
    assert torch.equal(q(x), want) and calls == [1]
    with fd.use_backend("python"):
        torch.testing.assert_close(q(x), want, rtol=1e-5, atol=1e-5)
    assert calls == [1]
