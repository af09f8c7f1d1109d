"""SparseLinear and compress.sparsify: same outputs as the dense layers they replace; replacement only where
faster (the decision logic is tested through its modelled path and through layers that can never win)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import fastdistill as fd
from fastdistill.nn import SparseLinear


def close(a, b):
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), float((a - b).abs().max())


def test_from_dense_uses_zeros_or_prunes(gen):
    lin = nn.Linear(48, 20)
    with torch.no_grad():
        lin.weight.masked_fill_(torch.rand(20, 48, generator=gen) < 0.7, 0)
    x = torch.randn(5, 48, generator=gen)
    sl = SparseLinear.from_dense(lin)
    assert sl.weight.nnz == int((lin.weight != 0).sum())
    close(sl(x), lin(x))
    before = lin.weight.detach().clone()
    pruned = SparseLinear.from_dense(lin, sparsity=0.9)
    assert torch.equal(lin.weight, before)  # the source layer is untouched
    assert pruned.weight.nnz == 48 * 20 - round(0.9 * 48 * 20)
    want = fd.magnitude_mask(before, 0.9) * before
    close(pruned(x), x @ want.t() + lin.bias)
    close(pruned.to_linear()(x), pruned(x))
    no_bias = SparseLinear.from_dense(nn.Linear(48, 20, bias=False), sparsity=0.5)
    assert no_bias.bias is None and no_bias(x).shape == (5, 20)
    with pytest.raises(TypeError, match="linear"):
        SparseLinear.from_dense(nn.Conv1d(2, 2, 1))


def test_state_dict_round_trip(gen):
    sl = SparseLinear.from_dense(nn.Linear(30, 12), sparsity=0.8)
    keys = set(sl.state_dict())
    assert keys == {"indptr", "indices", "values", "bias"}
    other = SparseLinear.from_dense(nn.Linear(30, 12), sparsity=0.8)
    other.load_state_dict(sl.state_dict())
    x = torch.randn(3, 30, generator=gen)
    assert torch.equal(other(x), sl(x))


def _model():
    return nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 8))


def test_sparsify_modelled_decision(gen):
    model = _model()
    fd.compress.prune(model, 0.9, scope="layer", include=["0"])
    fd.compress.prune(model, 0.6, scope="layer", include=["2"])
    x = torch.randn(7, 256, generator=gen)
    want = model(x)
    report = fd.compress.sparsify(model, measure=False)
    assert isinstance(model[0], SparseLinear) and report["0"]["replaced"]
    assert type(model[2]) is nn.Linear and not report["2"]["replaced"]  # 0.6 < the modelled 0.75
    assert type(model[4]) is nn.Linear and "min_sparsity" in report["4"]["reason"]
    close(model(x), want)


def test_sparsify_measured_follows_timings(gen):
    model = _model()
    fd.compress.prune(model, 0.9, scope="layer")
    x = torch.randn(4, 256, generator=gen)
    want = model(x)
    report = fd.compress.sparsify(model, batch_size=64, margin=0.5)
    for name in ("0", "2", "4"):
        entry = report[name]
        assert entry["replaced"] == (entry["sparse_ms"] <= 0.5 * entry["dense_ms"])
        assert isinstance(model.get_submodule(name), SparseLinear) == entry["replaced"]
    close(model(x), want)


def test_gradient_flows_to_input(gen):
    layer = SparseLinear.from_dense(nn.Linear(30, 12), sparsity=0.7)
    dense = layer.to_linear()
    x = torch.randn(5, 30, generator=gen, requires_grad=True)
    g = torch.randn(5, 12, generator=gen)
    (layer(x) * g).sum().backward()
    want = torch.autograd.grad((dense(x) * g).sum(), x)[0]
    close(x.grad, want)


def test_sparsify_leaves_attention_projections(gen):
    mha = nn.MultiheadAttention(32, 4)
    with torch.no_grad():
        mha.out_proj.weight.zero_()
    model = nn.Sequential(mha)
    fd.compress.sparsify(model, measure=False)
    assert not isinstance(mha.out_proj, SparseLinear)


def test_sparsify_bad_arguments():
    with pytest.raises(ValueError, match="bare nn.Linear"):
        fd.compress.sparsify(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="batch_size"):
        fd.compress.sparsify(_model(), batch_size=0)
    with pytest.raises(ValueError, match="min_sparsity"):
        fd.compress.sparsify(_model(), min_sparsity=2.0)


def test_int8_values_layer(gen):
    lin = nn.Linear(48, 20)
    x = torch.randn(5, 48, generator=gen)
    q = SparseLinear.from_dense(lin, sparsity=0.9, dtype=torch.int8)
    assert q.values.dtype == torch.int8 and q.scale.shape == (20,)
    assert set(q.state_dict()) == {"indptr", "indices", "values", "scale", "bias"}
    deq = q.weight.to_dense()
    close(q(x), x @ deq.t() + lin.bias)
    close(q.to_linear()(x), q(x))
    # quantization error: within scale / 2 of the pruned fp32 weight
    pruned = SparseLinear.from_dense(lin, sparsity=0.9).weight.to_dense()
    assert bool(((deq - pruned).abs() <= q.scale[:, None] * (0.5 + 1e-5)).all())
    other = SparseLinear.from_dense(nn.Linear(48, 20), sparsity=0.9, dtype=torch.int8)
    other.load_state_dict(q.state_dict())
    assert torch.equal(other(x), q(x))
    assert "values=torch.int8" in repr(q)
