"""Wanda (activation-aware unstructured pruning): the wanda_mask op on every backend equals the reference exactly
(awkward shapes, ties, fp16/bf16 weights), and compress.prune(method="wanda") prunes each output row by
|w| x input-feature norm over calibration batches, keeps the masks while training, and beats magnitude pruning
when a few input features dominate."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import fastdistill as fd
from fastdistill._dispatch import backend_kernel
from fastdistill.backends.python.wanda import wanda_mask as reference


def _skip_unserved():
    if backend_kernel("wanda_mask", fd.get_backend()) is None:
        pytest.skip(f"no {fd.get_backend()} kernel for wanda_mask")


@pytest.mark.parametrize("rows,cols", [(1, 1), (7, 33), (64, 384), (3, 1000), (0, 16), (5, 0), (129, 70)])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 1.0])
def test_matches_reference(backend, gen, rows, cols, sparsity):
    _skip_unserved()
    w = torch.randn(rows, cols, generator=gen)
    norms = torch.rand(cols, generator=gen) * 3
    k = round(sparsity * cols)
    want = reference(w, norms, k)
    got = fd.wanda_mask(w.to(backend), norms.to(backend), sparsity)
    assert torch.equal(got.cpu(), want)
    assert bool((got.cpu().sum(1) == cols - k).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ties_and_half_dtypes(backend, gen, dtype):
    _skip_unserved()
    w = torch.randint(-3, 4, (40, 96), generator=gen).to(dtype)  # many equal scores, zeros included
    norms = torch.randint(0, 3, (96,), generator=gen).float()
    got = fd.wanda_mask(w.to(backend), norms.to(backend), 0.4).cpu()
    assert torch.equal(got, reference(w, norms, round(0.4 * 96)))
    nc = torch.randn(96, 40, generator=gen).t()  # non-contiguous
    assert torch.equal(fd.wanda_mask(nc.to(backend), norms.to(backend), 7).cpu(), reference(nc.contiguous(), norms, 7))


def test_errors(gen):
    w = torch.randn(4, 8, generator=gen)
    with pytest.raises(ValueError, match="input_norms"):
        fd.wanda_mask(w, torch.ones(7), 0.5)
    with pytest.raises(ValueError, match="input_norms"):
        fd.wanda_mask(w, -torch.ones(8), 0.5)
    with pytest.raises(ValueError, match="weight"):
        fd.wanda_mask(torch.randn(8), torch.ones(8), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        fd.wanda_mask(torch.full((2, 8), float("nan")), torch.ones(8), 0.5)
    with pytest.raises(ValueError, match="sparsity"):
        fd.wanda_mask(w, torch.ones(8), 1.5)


def test_compress_prune_wanda(gen):
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Conv1d(1, 4, 5), nn.Flatten(), nn.Linear(4 * 60, 3))

    def forward_batches():
        for _ in range(3):
            yield torch.randn(16, 32, generator=gen)

    class Wrap(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            h = self.m[1](self.m[0](x)).unsqueeze(1)
            return self.m[4](self.m[3](self.m[2](h)))

    wrapped = Wrap(model)
    batches = list(forward_batches())
    masks = fd.compress.prune(wrapped, 0.5, method="wanda", calibration=batches)
    assert set(masks) == {"m.0", "m.2", "m.4"}
    assert bool((masks["m.0"].sum(1) == 32 - 16).all()) and bool((masks["m.2"].reshape(4, -1).sum(1) == 3).all())
    # the first layer's mask is the op's on the norms of the calibration inputs
    norms = torch.cat(batches).square().sum(0).sqrt()
    assert torch.equal(masks["m.0"], fd.wanda_mask(model[0].weight, norms, 0.5))
    assert bool((model[0].weight[~masks["m.0"]] == 0).all())
    with pytest.raises(ValueError, match="calibration"):
        fd.compress.prune(wrapped, 0.5, method="wanda")


def test_wanda_beats_magnitude_with_outlier_features(gen):
    """Inputs with a few large features: magnitude pruning drops the small weights that read them; Wanda keeps
    them (the reconstruction error of the layer's output is much lower)."""
    lin = nn.Linear(256, 128)
    scale = torch.ones(256)
    scale[torch.randperm(256, generator=gen)[:8]] = 50.0
    x = torch.randn(512, 256, generator=gen) * scale
    errs = {}
    for method in ("magnitude", "wanda"):
        m = nn.Sequential(nn.Linear(256, 128))
        m[0].load_state_dict(lin.state_dict())
        fd.compress.prune(m, 0.5, method=method, scope="layer", calibration=[x])
        with torch.no_grad():
            errs[method] = float((m(x) - lin(x)).norm() / lin(x).norm())
    print(errs)
    assert errs["wanda"] < 0.5 * errs["magnitude"]
