"""Structured pruning that shrinks the model: whole neurons (MLP / FFN hidden units, conv channels, with the matching
BatchNorm entries and the consumers' input columns), residual-stream channels, and attention heads.

Which channels must go together is read from the model's ``torch.export`` graph (see
:mod:`fastdistill.compress.structure`): ``fc1 -> act -> fc2`` FFN blocks and MLPs of ``nn.Sequential``, conv
chains through BatchNorm and pooling, layers whose output several layers read, the q/k/v/output projections of
attention (Hugging Face BERT-style encoders included), and, on request, a residual stream with its LayerNorms and
embeddings. Layers whose channels reach the model's output or meet an op that cannot be followed are left alone;
naming one (``include``) raises a ValueError saying why.

A removed neuron's value after its element-wise chain is the constant ``act(0)`` in the masked model (producer row,
bias entry and BatchNorm scale/shift zeroed); its contribution (non-zero for sigmoid, softplus, ...) is folded into
the consumer's bias, so neuron and head pruning compute what the masked model computes, up to float summation order.
(A zero-padding consumer convolution sees that constant only away from the borders: there a non-zero ``act(0)``
raises instead.) Pruning a residual stream changes its LayerNorms' statistics: recover by fine-tuning/distillation.
"""
from __future__ import annotations

import fnmatch
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .._convert import prune_count
from .structure import (ChannelGroup, LossFn, _holders, analyse, batches_of, call_model, check_foldable, hf_configs,
                        per_batch_gradients, remove_channels, run_hooked)

CRITERIA = ("l1", "l2", "activation", "taylor", "random")
SCOPES = ("layer", "global")


def channel_groups(model: nn.Module, example_inputs: Any = None) -> List[ChannelGroup]:
    """Every group of channels of ``model`` that can only be removed together, with why it cannot be pruned where
    it cannot (``group.reason``). ``example_inputs``: one batch (a tensor, a tuple of arguments or a dict of keyword
    arguments) or an iterable of them; without it, a random input is made for the model's first layer.

    Example::

        >>> model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> [(g.name, g.kind, g.width, g.reason is None) for g in fastdistill.compress.channel_groups(model)]
        [('<input of 0>', 'input', 16, False), ('0', 'neurons', 32, True), ('2', 'neurons', 4, False)]
    """
    return analyse(model, example_inputs)


# ------------------------------------------------------------------------------------------------ importance


def _weight_members(model: nn.Module, group: ChannelGroup):
    producers = set(group.producers)
    for name, dim in group.members:
        module, _, attr = name.rpartition(".")
        if module in producers and attr == "weight":
            yield model.get_parameter(name), dim


def _per_channel(t: Tensor, dim: int, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``fn`` of ``t`` summed over every dimension but ``dim`` (float32, on the CPU)."""
    moved = t.detach().float().movedim(dim, 0)
    return fn(moved).reshape(moved.shape[0], -1).sum(1).cpu()


def _per_unit(channel: Tensor, unit: int, square_root: bool = False) -> Tensor:
    units = channel.reshape(-1, unit).sum(1)
    return units.sqrt() if square_root else units


def _norm_scores(model: nn.Module, group: ChannelGroup, p: int) -> Tensor:
    total = torch.zeros(group.width)
    for w, dim in _weight_members(model, group):
        total += _per_channel(w, dim, torch.abs if p == 1 else torch.square)
    return _per_unit(total, group.unit, square_root=p == 2)


def _activation_scores(model: nn.Module, groups: List[ChannelGroup], batches: List[Any]) -> Dict[str, Tensor]:
    """Mean |activation| of each channel where its consumers read it, summed over the consumers and per unit."""
    sums: Dict[str, Tensor] = {g.name: torch.zeros(g.width) for g in groups}
    counts: Dict[str, int] = {g.name: 0 for g in groups}
    hooks = []
    for g in groups:
        readers = [e.module for e in g.edges
                   if isinstance(model.get_submodule(e.module), (nn.Linear, nn.modules.conv._ConvNd))]
        if not readers:
            raise ValueError(f"criterion: 'activation' measures channels where a Linear/Conv layer reads them; "
                             f"no such layer reads {g.name!r}")
        for reader in dict.fromkeys(readers):
            def hook(mod, args, key=g.name):
                a = args[0].detach().float().abs()
                a = a.movedim(1, -1) if isinstance(mod, nn.modules.conv._ConvNd) else a
                a = a.reshape(-1, a.shape[-1])
                sums[key] += a.sum(0).cpu()
                counts[key] += a.shape[0]
            hooks.append(model.get_submodule(reader).register_forward_pre_hook(hook))
    run_hooked(model, batches, hooks)
    out = {}
    for g in groups:
        if not counts[g.name]:
            raise ValueError(f"example_inputs: layer {g.name!r} was not reached by any example input")
        out[g.name] = _per_unit(sums[g.name] / counts[g.name], g.unit)
    return out


def _taylor_scores(model: nn.Module, groups: List[ChannelGroup], batches: List[Any], loss_fn: LossFn,
                   targets: Optional[Sequence[Any]]) -> Dict[str, Tensor]:
    """First-order Taylor importance (Molchanov et al. 2019): per batch, (sum over the channel's parameters of
    weight x gradient)^2, averaged over the batches."""
    named = dict(model.named_parameters())
    params = {name: named[name] for g in groups for name, _ in g.members if name in named}
    out = {g.name: torch.zeros(g.units) for g in groups}
    for _ in per_batch_gradients(params, batches, targets, lambda b, t: loss_fn(call_model(model, b), t)):
        for g in groups:
            contrib = torch.zeros(g.width)
            for name, dim in g.members:
                p = params.get(name)
                if p is not None and p.grad is not None:
                    contrib += _per_channel(p * p.grad, dim, lambda t: t)
            out[g.name] += _per_unit(contrib, g.unit) ** 2
    return {k: v / len(batches) for k, v in out.items()}


def importance(model: nn.Module, groups: List[ChannelGroup], criterion: str, example_inputs: Any = None,
               generator: Optional[torch.Generator] = None, loss_fn: Optional[LossFn] = None,
               targets: Optional[Sequence[Any]] = None) -> Dict[str, Tensor]:
    """{group name: score per unit (head or channel)}; the lowest scores are pruned first."""
    if criterion in ("l1", "l2"):
        return {g.name: _norm_scores(model, g, 1 if criterion == "l1" else 2) for g in groups}
    if criterion == "random":
        return {g.name: torch.rand(g.units, generator=generator) for g in groups}
    batches = batches_of(example_inputs)
    if criterion == "activation":
        return _activation_scores(model, groups, batches)
    return _taylor_scores(model, groups, batches, loss_fn, targets)


# ------------------------------------------------------------------------------------------------ selection


def _keep_counts(groups: List[ChannelGroup], scores: Dict[str, Tensor], amount: Union[float, int], scope: str,
                 round_to: int, min_units: int) -> Dict[str, int]:
    """Units kept per group: ``amount`` of each group's units (scope "layer") or of all of them, compared by their
    score over their group's mean score (scope "global"), rounded up to ``round_to`` channels."""
    def rounded(g: ChannelGroup, keep: int) -> int:
        step = round_to if g.unit == 1 else 1
        return min(g.units, max(min_units, math.ceil(keep / step) * step))

    if scope == "layer":
        return {g.name: rounded(g, g.units - prune_count(amount, g.units, "amount")) for g in groups}
    k = prune_count(amount, sum(g.units for g in groups), "amount")
    normed = []
    for g in groups:
        s = scores[g.name].double()
        mean = float(s.mean()) if s.numel() else 0.0
        normed.append(s / mean if mean > 0 else s)
    order = torch.sort(torch.cat(normed), stable=True).indices[:k]
    owner = torch.repeat_interleave(torch.arange(len(groups)), torch.tensor([g.units for g in groups]))
    removed = torch.bincount(owner[order], minlength=len(groups))
    # every layer keeps at least one step of units (global ranking must not empty a layer)
    return {g.name: rounded(g, max(g.units - int(removed[i]), 1)) for i, g in enumerate(groups)}


def _select(groups: List[ChannelGroup], kinds: Sequence[str], include: Optional[Sequence[str]],
            what: str) -> List[ChannelGroup]:
    candidates = [g for g in groups if g.kind in kinds and g.producers]
    if include is None:
        chosen = [g for g in candidates if g.reason is None]
        if not chosen:
            why = {g.name: g.reason for g in candidates} or "no layer produces such channels"
            raise ValueError(f"model: no {what} can be removed; nothing to prune (per group: {why})")
        return chosen
    patterns = [include] if isinstance(include, str) else list(include)
    chosen = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"include: expected layer names or glob patterns, got {pattern!r}")
        hits = [g for g in groups if any(fnmatch.fnmatchcase(n, pattern) for n in g.producers + g.owners)]
        if not hits:
            raise ValueError(f"layer {pattern!r}: not a layer producing channels of the model (layers: "
                             f"{[g.name for g in groups]})")
        for g in hits:
            if g.reason is not None:
                raise ValueError(f"layer {pattern!r}: cannot prune its {what}: {g.reason}")
            if (g.kind == "heads") != (what == "heads"):
                other = "prune_heads" if g.kind == "heads" else "prune_neurons"
                raise ValueError(f"layer {pattern!r}: its channels are {g.kind} ({g.name!r}); use {other}")
            if g not in chosen:
                chosen.append(g)
    return chosen


def _check(model: nn.Module, criterion: str, scope: str, example_inputs: Any, loss_fn: Optional[LossFn]) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: expected one of {CRITERIA}, got {criterion!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope: expected one of {SCOPES}, got {scope!r}")
    if criterion in ("activation", "taylor") and example_inputs is None:
        raise ValueError(f"example_inputs: required for criterion={criterion!r}")
    if criterion == "taylor" and not callable(loss_fn):
        raise ValueError("loss_fn: criterion='taylor' needs loss_fn(output, target) -> scalar loss to differentiate")


def _prune(model: nn.Module, amount: Union[float, int], kinds: Sequence[str], what: str, *, criterion: str,
           scope: str, example_inputs: Any, round_to: int, include: Any, generator: Optional[torch.Generator],
           loss_fn: Optional[LossFn], targets: Optional[Sequence[Any]],
           min_units: int) -> Tuple[Dict[str, Tensor], List[ChannelGroup]]:
    _check(model, criterion, scope, example_inputs, loss_fn)
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise TypeError(f"amount: expected a float in [0, 1] or an int count, got {type(amount).__name__}")
    groups = _select(analyse(model, example_inputs), kinds, include, what)
    scores = importance(model, groups, criterion, example_inputs, generator, loss_fn, targets)
    keep_n = _keep_counts(groups, scores, amount, scope, round_to, min_units)
    for g in groups:
        check_foldable(g, keep_n[g.name] < g.units)
    holders = _holders(model)
    kept: Dict[str, Tensor] = {}
    for g in groups:
        order = torch.sort(scores[g.name], stable=True).indices
        keep_units = order[g.units - keep_n[g.name]:].sort().values
        channels = remove_channels(model, g, keep_units, holders)
        kept[g.name] = keep_units if g.unit > 1 else channels
    return kept, groups


def _check_round_to(round_to: Any) -> None:
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"round_to: expected an int >= 1, got {round_to!r}")


def prune_neurons(
    model: nn.Module,
    amount: Union[float, int],
    *,
    criterion: str = "l1",
    scope: str = "layer",
    example_inputs: Any = None,
    round_to: int = 8,
    include: Optional[Sequence[str]] = None,
    residual: bool = False,
    generator: Optional[torch.Generator] = None,
    loss_fn: Optional[LossFn] = None,
    targets: Optional[Sequence[Any]] = None,
) -> Dict[str, Tensor]:
    """Removes ``amount`` of the neurons (a fraction, or a count per layer) of every prunable layer, in place: the
    producer's output rows, the matching BatchNorm entries and the consumers' input columns; the model gets
    physically smaller and stays an ordinary ``nn.Module`` (Hugging Face configs get the new ``intermediate_size``
    when every FFN was pruned to the same width).

    Args:
        criterion: ``"l1"`` / ``"l2"`` norm of the neuron's weight rows; ``"activation"`` (mean |activation| where
            the consumers read it, over ``example_inputs``); ``"taylor"`` (first-order Taylor importance
            (w * dL/dw summed over the neuron's parameters)^2 per batch of ``example_inputs``, with the scalar loss
            ``loss_fn(output, target)``, ``targets`` one per batch or None);
            ``"random"`` (with ``generator``). The lowest-scoring neurons go (ties: lower index first).
        scope: ``"layer"`` prunes ``amount`` in each layer; ``"global"`` ranks all neurons together (scores over
            their layer's mean score) and keeps at least ``round_to`` per layer.
        example_inputs: a batch (a tensor, a tuple of arguments, a dict of keyword arguments such as a tokenizer's
            output) or an iterable of batches; the model is exported on the first to read its structure (without
            it, a random input for the first Linear/Conv/Embedding layer is used).
        round_to: the number of neurons kept is rounded up to a multiple of this (SIMD-friendly widths).
        include: names or glob patterns of the producer layers to prune (default: every prunable layer; a residual
            stream named here is pruned without ``residual``); a named layer that cannot be pruned raises
            ValueError saying why.
        residual: also prune residual streams (channels several layers add up, with their LayerNorms and
            embeddings) that do not reach the model's output; such pruning is not exact (see the module docstring).

    Returns ``{producer name: indices of the kept neurons}``. Optimizers holding the old parameters must be rebuilt.

    Example::

        >>> model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> kept = fastdistill.compress.prune_neurons(model, 0.5)
        >>> model[0].out_features, model[2].in_features
        (32, 32)
    """
    _check_round_to(round_to)
    kinds = ("neurons", "residual") if residual else ("neurons",)
    kept, groups = _prune(model, amount, kinds, "neurons", criterion=criterion, scope=scope,
                          example_inputs=example_inputs, round_to=round_to, include=include, generator=generator,
                          loss_fn=loss_fn, targets=targets, min_units=0)
    for cfg in hf_configs(model):
        old = getattr(cfg, "intermediate_size", None)
        widths = {kept[g.name].numel() for g in groups if g.kind == "neurons" and g.width == old}
        ffns = sum(1 for g in groups if g.kind == "neurons" and g.width == old)
        if isinstance(old, int) and len(widths) == 1 and ffns == getattr(cfg, "num_hidden_layers", ffns):
            cfg.intermediate_size = widths.pop()
    return kept


def prune_heads(
    model: nn.Module,
    amount: Union[float, int],
    *,
    example_inputs: Any = None,
    criterion: str = "l1",
    scope: str = "layer",
    include: Optional[Sequence[str]] = None,
    generator: Optional[torch.Generator] = None,
    loss_fn: Optional[LossFn] = None,
    targets: Optional[Sequence[Any]] = None,
) -> Dict[str, Tensor]:
    """Removes ``amount`` of the attention heads (a fraction, or a count per attention block) of every attention
    block the graph shows (q/k/v projections reshaped into heads, ``scaled_dot_product_attention`` or the
    matmul/softmax form, reshaped back into an output projection), in place: the heads' q/k/v rows and biases and
    the output projection's columns. At least one head stays per block. The attention modules' head counts
    (``num_attention_heads``, ``all_head_size``, ...) are updated; a Hugging Face config's ``num_attention_heads``
    is not (it sets the head size of a freshly built model: :func:`fastdistill.load` into the original architecture
    restores the pruned shapes).

    Arguments as :func:`prune_neurons` (``criterion="activation"`` scores a head by the mean |output| it feeds the
    output projection). Returns ``{attention module name: indices of the kept heads}``.

    Example::

        >>> kept = fastdistill.compress.prune_heads(bert, 0.5, example_inputs=tokenizer(texts, return_tensors="pt",
        ...                                                                          padding=True))  # doctest: +SKIP
        >>> bert.encoder.layer[0].attention.self.num_attention_heads  # doctest: +SKIP
        6
    """
    kept, groups = _prune(model, amount, ("heads",), "heads", criterion=criterion, scope=scope,
                          example_inputs=example_inputs, round_to=1, include=include, generator=generator,
                          loss_fn=loss_fn, targets=targets, min_units=1)
    return {(g.owners[0] if g.owners else g.name): kept[g.name] for g in groups}
