"""prune_neurons: the shrunk model computes what the masked model (pruned neurons' weight rows and biases zeroed)
computes, to float summation order (rtol = atol = 1e-5); graphs it cannot follow raise naming the layer."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastdistill as fd


def masked(model, kept):
    """Copy of ``model`` with every neuron not in ``kept`` zeroed (weight row and bias entry)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for name, keep in kept.items():
            layer = m.get_submodule(name)
            drop = torch.ones(layer.weight.shape[0], dtype=torch.bool)
            drop[keep] = False
            layer.weight[drop] = 0
            if layer.bias is not None:
                layer.bias[drop] = 0
    return m


def close(a, b):
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), float((a - b).abs().max())


class FFN(nn.Module):
    """Transformer-style block: the residual add stops fc2, fc1 -> act -> fc2 is prunable."""

    def __init__(self, d=24, h=80, act=F.gelu):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(d, h), nn.Linear(h, d), act

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(x)))


@pytest.mark.parametrize("criterion", ["l1", "l2", "activation", "random"])
def test_sequential_mlp_matches_masked(gen, criterion):
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 40), nn.Tanh(),
                          nn.Linear(40, 5)).eval()
    x = torch.randn(9, 20, generator=gen)
    original = copy.deepcopy(model)
    kept = fd.compress.prune_neurons(model, 0.5, criterion=criterion, example_inputs=[x[:4], x[4:]],
                                     generator=gen)
    assert set(kept) == {"0", "3"}
    assert model[0].out_features == model[3].in_features == 32
    assert model[3].out_features == model[5].in_features == 24  # 20 kept, rounded up to a multiple of 8
    assert model[0].weight.shape == (32, 20) and model[5].weight.shape == (5, 24)
    close(model(x), masked(original, kept)(x))


def test_activation_criterion_drops_dead_neurons(gen):
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        model[0].bias[:8] = -1e3  # ReLU never fires for the first 8 neurons
    kept = fd.compress.prune_neurons(model, 8, criterion="activation",
                                     example_inputs=[torch.randn(32, 8, generator=gen)], round_to=1)
    assert torch.equal(kept["0"], torch.arange(8, 16))


def test_ffn_block_and_bias_folding(gen):
    for act in (F.gelu, torch.sigmoid, nn.Softplus()):  # sigmoid(0), softplus(0) != 0: folded into fc2's bias
        block = FFN(act=act)
        x = torch.randn(3, 7, 24, generator=gen)
        original = copy.deepcopy(block)
        kept = fd.compress.prune_neurons(block, 0.7, round_to=4)
        assert list(kept) == ["fc1"] and block.fc1.out_features == 24
        close(block(x), masked(original, kept)(x))
    with pytest.raises(ValueError, match="'fc2'.*add"):
        fd.compress.prune_neurons(FFN(), 0.5, include=["fc2"])


def test_branches_and_unfollowable_graphs(gen):
    class Branchy(nn.Module):
        """a's neurons feed two layers (both lose the columns); b + c reach the output (not prunable)."""

        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 16), nn.Linear(16, 8), nn.Linear(16, 8)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.b(h) + self.c(h)

    model = Branchy()
    original = copy.deepcopy(model)
    x = torch.randn(5, 4, generator=gen)
    kept = fd.compress.prune_neurons(model, 0.5, round_to=1)
    assert list(kept) == ["a"] and model.b.in_features == model.c.in_features == 8
    close(model(x), masked(original, kept)(x))
    with pytest.raises(ValueError, match="'b'.*reach the model's output"):
        fd.compress.prune_neurons(Branchy(), 0.5, include="b")

    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else x

    with pytest.raises(ValueError, match="torch.export"):
        fd.compress.prune_neurons(Dynamic(), 0.5)
    shared = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="'0'.*output"):  # its rows are also the output's channels
        fd.compress.prune_neurons(nn.Sequential(shared, nn.ReLU(), shared), 0.5, include=["0"])
    with pytest.raises(ValueError, match="nothing to prune"):
        fd.compress.prune_neurons(nn.Sequential(shared, nn.ReLU(), shared), 0.5)


def test_keeps_pruning_masks_consistent(gen):
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    fd.compress.prune(model, 0.5)
    fd.compress.prune_neurons(model, 0.5)
    assert model[0].weight_mask.shape == model[0].weight.shape == (16, 16)
    assert model[2].weight_mask.shape == model[2].weight.shape == (4, 16)
    assert bool((model[0].weight[~model[0].weight_mask] == 0).all())


def test_bad_arguments():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="criterion"):
        fd.compress.prune_neurons(model, 0.5, criterion="l3")
    with pytest.raises(ValueError, match="example_inputs"):
        fd.compress.prune_neurons(model, 0.5, criterion="activation")
    with pytest.raises(ValueError, match="amount"):
        fd.compress.prune_neurons(model, 1.5)
    with pytest.raises(ValueError, match="round_to"):
        fd.compress.prune_neurons(model, 0.5, round_to=0)


@pytest.mark.parametrize("criterion", ["l2", "activation"])
def test_conv_bn_chain_matches_masked(gen, criterion):
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 24, 3),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 5))
    with torch.no_grad():  # non-trivial running statistics
        model[1].running_mean.uniform_(-1, 1, generator=gen)
        model[1].running_var.uniform_(0.5, 2, generator=gen)
        model[1].weight.uniform_(0.5, 2, generator=gen)
        model[1].bias.uniform_(-1, 1, generator=gen)
    model.eval()
    x = torch.randn(2, 3, 12, 12, generator=gen)
    original = copy.deepcopy(model)
    kept = fd.compress.prune_neurons(model, 0.5, round_to=4, criterion=criterion, example_inputs=[x])
    assert list(kept) == ["0", "3"]  # conv 3 -> relu -> pool to 1x1 -> flatten -> linear is followed too
    assert model[0].out_channels == model[1].num_features == model[3].in_channels == 8
    assert model[3].out_channels == model[7].in_features == 12
    ref = masked(original, kept)
    with torch.no_grad():
        drop = torch.ones(16, dtype=torch.bool)
        drop[kept["0"]] = False
        ref[1].weight[drop] = 0
        ref[1].bias[drop] = 0
    close(model(x), ref(x))
    sig = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Sigmoid(), nn.Conv2d(8, 4, 3, padding=1))
    with pytest.raises(ValueError, match="zero-pads"):
        fd.compress.prune_neurons(sig, 0.5, round_to=1)
