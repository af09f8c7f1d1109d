"""Model-level pruning: masks equal torch.nn.utils.prune's, pruned weights stay zero through optimizer steps."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.utils.prune as tprune
from torch import nn

import fastdistill as fd


def model_factory(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 32), nn.ReLU(),
                         nn.Linear(32, 5))


@pytest.mark.parametrize("sparsity", [0.3, 0.8, 0.99])
def test_global_matches_torch(backend, sparsity):
    if backend != "cpu":
        pytest.skip("CPU model")
    ours, theirs = model_factory(0), model_factory(0)
    masks = fd.compress.prune(ours, sparsity)
    params = [(m, "weight") for m in theirs if isinstance(m, (nn.Linear, nn.Conv2d))]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=sparsity)
    for (name, mask), (m, _) in zip(masks.items(), params):
        assert torch.equal(mask, m.weight_mask.bool()), name
        assert torch.equal(ours.get_submodule(name).weight, m.weight)


def test_layer_scope_matches_l1_unstructured():
    ours, theirs = model_factory(1), model_factory(1)
    fd.compress.prune(ours, 0.6, scope="layer")
    for a, b in zip(ours, theirs):
        if isinstance(b, (nn.Linear, nn.Conv2d)):
            tprune.l1_unstructured(b, "weight", amount=0.6)
            assert torch.equal(a.weight_mask, b.weight_mask.bool())


@pytest.mark.parametrize("opt", [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
                                 lambda p: torch.optim.AdamW(p, lr=1e-2)], ids=["sgd-momentum", "adamw"])
def test_zeros_survive_training(opt):
    model = model_factory(2)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 5, (16,))
    optimizer = opt(model.parameters())
    for _ in range(2):  # momentum state from before pruning must not revive pruned weights
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    masks = fd.compress.prune(model, 0.7)
    before = {n: model.get_submodule(n).weight.detach().clone() for n in masks}
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    for name, mask in masks.items():
        w = model.get_submodule(name).weight
        assert torch.all(w[~mask] == 0), name
        assert not torch.equal(w[mask], before[name][mask]), "kept weights should still train"
    assert abs(fd.compress.sparsity(model)["total"] - 0.7) < 1e-3


def test_remove_pruning_and_state_dict():
    model = model_factory(3)
    fd.compress.prune(model, 0.5, exclude=[nn.Conv2d])
    sd = model.state_dict()
    assert "3.weight_mask" in sd and "5.weight_mask" in sd and "0.weight_mask" not in sd
    clone = model_factory(3)
    fd.compress.prune(clone, 0.0, exclude=[nn.Conv2d])  # same buffers, then load the pruned state
    clone.load_state_dict(sd)
    assert torch.equal(clone[3].weight_mask, model[3].weight_mask)
    assert fd.compress.remove_pruning(model) == 2
    assert "3.weight_mask" not in model.state_dict()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()  # no longer pruned: zeros may move
    assert fd.compress.sparsity(model)["3"] < 0.5


def test_include_exclude_and_random():
    model = model_factory(4)
    masks = fd.compress.prune(model, 0.5, include=["3", "5"], method="random", scope="layer",
                              generator=torch.Generator().manual_seed(0))
    assert set(masks) == {"3", "5"}
    for name, mask in masks.items():
        assert int((~mask).sum()) == round(0.5 * mask.numel())
    masks = fd.compress.prune(copy.deepcopy(model), 100, method="random")
    assert sum(int((~m).sum()) for m in masks.values()) == 100


def test_reprune_higher_sparsity_keeps_old_zeros():
    model = model_factory(5)
    first = fd.compress.prune(model, 0.5)
    second = fd.compress.prune(model, 0.8)
    for name in first:
        assert not torch.any(second[name] & ~first[name])  # everything pruned before stays pruned


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(scope="row"), ValueError, "scope"),
    (dict(method="taylor"), ValueError, "method"),
    (dict(include=["nothing*"]), ValueError, "no Linear/Conv layer"),
    (dict(include=[3]), TypeError, "include"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fd.compress.prune(model_factory(6), 0.5, **kwargs)
    with pytest.raises(ValueError, match="sparsity"):
        fd.compress.prune(model_factory(6), 1.5)
