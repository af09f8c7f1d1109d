"""Calibrated weight quantization: the "fisher" scale method (squared-gradient-weighted clip search) and GPTQ rounding,
against their definitions and against round-to-nearest."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastdistill as fd
from fastdistill.compress.gptq import gptq_quantize


def test_fisher_scale_definition(gen):
    w = torch.randn(6, 64, generator=gen)
    uniform = fd.quantize(w, 4, granularity="channel", scale_method="fisher", fisher=torch.ones_like(w))
    mse = fd.quantize(w, 4, granularity="channel", scale_method="mse")
    assert torch.equal(uniform.codes, mse.codes) and torch.equal(uniform.scale, mse.scale)
    zero = fd.quantize(w, 4, granularity="channel", scale_method="fisher", fisher=torch.zeros_like(w))
    assert torch.equal(zero.scale, fd.quantize(w, 4, granularity="channel").scale)  # ties keep the absmax clip
    # all the weight on one element per row: the chosen clip reconstructs that element at least as well as mse's
    f = torch.zeros_like(w)
    f[torch.arange(6), torch.randint(0, 64, (6,), generator=gen)] = 1.0
    fq = fd.quantize(w, 4, granularity="channel", scale_method="fisher", fisher=f)
    err_f = ((fq.dequantize() - w) ** 2 * f).sum(1)
    err_m = ((mse.dequantize() - w) ** 2 * f).sum(1)
    assert bool((err_f <= err_m + 1e-7).all())
    g = fd.quantize(w, 8, granularity="group", group_size=16, scale_method="fisher", scheme="asymmetric",
                    fisher=torch.rand(w.shape, generator=gen))
    assert g.scale.shape == (24,) and g.dequantize().shape == w.shape


def test_fisher_errors(gen):
    w = torch.randn(4, 8, generator=gen)
    with pytest.raises(ValueError, match="fisher"):
        fd.quantize(w, 4, scale_method="fisher")
    with pytest.raises(ValueError, match="fisher"):
        fd.quantize(w, 4, scale_method="fisher", fisher=torch.ones(4, 7))
    with pytest.raises(ValueError, match="fisher"):
        fd.quantize(w, 4, scale_method="fisher", fisher=-torch.ones_like(w))
    model = nn.Sequential(nn.Linear(8, 4))
    with pytest.raises(ValueError, match="calibration"):
        fd.compress.quantize(model, bits=4, group_size=8, scale_method="fisher")


def test_compress_quantize_fisher(gen):
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 5))
    x = [torch.randn(16, 32, generator=gen) for _ in range(3)]
    y = [torch.randint(0, 5, (16,), generator=gen) for _ in range(3)]
    for kwargs in ({}, {"loss_fn": F.cross_entropy, "targets": y}):
        q = fd.compress.quantize(model, bits=4, group_size=32, scale_method="fisher", calibration=x, **kwargs)
        assert isinstance(q[0], fd.nn.Int4Linear)
        with torch.no_grad():
            assert float((q(x[0]) - model(x[0])).norm() / model(x[0]).norm()) < 0.2
    q8 = fd.compress.quantize(model, scale_method="fisher", calibration=x)
    assert isinstance(q8[2], fd.nn.Int8Linear)
    assert model[0].weight.grad is None  # the calibration gradients are not left behind
    with pytest.raises(ValueError, match="targets"):
        fd.compress.quantize(model, bits=4, group_size=32, scale_method="fisher", calibration=x,
                             loss_fn=F.cross_entropy, targets=y[:2])


def test_gptq_with_identity_hessian_is_round_to_nearest(gen):
    """Uncorrelated, equal-power inputs: no error to push onto other columns, GPTQ rounds to nearest."""
    w = torch.randn(12, 64, generator=gen)
    q = gptq_quantize(w, torch.eye(64, dtype=torch.float64) * 5.0, 4, 16, damp=0.0)
    rtn = fd.quantize(w, 4, granularity="group", group_size=16)
    assert torch.equal(q.codes, rtn.codes) and torch.equal(q.scale, rtn.scale)


def test_gptq_lowers_output_error(gen):
    """Correlated inputs: GPTQ's layer outputs on them are closer to the float layer's than round-to-nearest's."""
    lin = nn.Linear(128, 48)
    mix = torch.randn(24, 128, generator=gen)  # inputs near a 24-dimensional subspace
    calib = [torch.randn(256, 24, generator=gen) @ mix + torch.randn(256, 128, generator=gen) * 0.05
             for _ in range(2)]
    model = nn.Sequential(lin)
    errs = {}
    for rounding in ("nearest", "gptq"):
        kwargs = {"calibration": calib} if rounding == "gptq" else {}
        q = fd.compress.quantize(model, bits=4, group_size=32, rounding=rounding, **kwargs)
        with torch.no_grad():
            x = torch.cat(calib)
            errs[rounding] = float((q(x) - model(x)).norm() / model(x).norm())
    assert errs["gptq"] < 0.5 * errs["nearest"], errs
    q = fd.compress.quantize(model, bits=4, group_size=32, rounding="gptq", calibration=calib)[0]
    fields = torch.stack([q.weight_int4 & 15, q.weight_int4 >> 4])  # codes + 8 stay in the symmetric range
    assert int(fields.min()) >= 1 and int(fields.max()) <= 15
    with pytest.raises(ValueError, match="gptq"):
        fd.compress.quantize(model, bits=8, rounding="gptq", calibration=calib)
    with pytest.raises(ValueError, match="gptq"):
        fd.compress.quantize(model, bits=4, rounding="gptq")
    with pytest.raises(ValueError, match="rounding"):
        fd.compress.quantize(model, bits=4, rounding="stochastic")
