"""Structured pruning that shrinks the model: whole output neurons of a Linear layer (output channels of a Conv2d,
with their BatchNorm2d entries) are removed together with the matching input columns (channels) of the layer that
consumes them.

The model is traced with ``torch.fx`` to find, for each ``nn.Linear`` (the producer), what reads its output. A
producer can be pruned when its output reaches exactly one layer of its own kind (the consumer) through a chain of
element-wise ops only (and, between convolutions, ``nn.BatchNorm2d``) (activations, dropout, identity: see ``ELEMENTWISE_MODULES`` / ``ELEMENTWISE_FUNCTIONS``), and
nothing else reads the output or the chain: the MLPs of ``nn.Sequential`` and the ``fc1 -> act -> fc2`` blocks of
transformer FFNs. Anything else (residual adds, reshapes, concatenation, a shared module) cannot be followed:
such layers are left alone, and asking for them by name (``include``) raises a ValueError naming the layer and the
op that stops it.

A removed neuron's output after the element-wise chain is the constant ``act(0)`` in the *masked* model (weight row,
bias entry and BatchNorm scale/shift zeroed); that constant's contribution (non-zero for sigmoid, softplus, ...) is
folded into the consumer's bias, so the pruned model computes what the masked model computes, up to float
summation order. (A zero-padding consumer convolution sees that constant only away from the borders: there a
non-zero ``act(0)`` raises instead.)
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .._convert import prune_count
from .prune import MASK

ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.SELU,
                       nn.CELU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Identity,
                       nn.Dropout, nn.AlphaDropout)
ELEMENTWISE_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.gelu, F.silu, torch.tanh, F.tanh, torch.sigmoid, F.sigmoid,
                         F.leaky_relu, F.elu, F.selu, F.celu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh,
                         F.softplus, F.dropout}
ELEMENTWISE_METHODS = {"relu", "tanh", "sigmoid"}
CRITERIA = ("l1", "l2", "activation", "random")


def _layer_kind(module: nn.Module) -> Optional[str]:
    """"linear" / "conv" for the layers whose outputs (channels) can be removed, else None."""
    if type(module) is nn.Linear:
        return "linear"
    if type(module) is nn.Conv2d and module.groups == 1:
        return "conv"
    return None


def _width(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


class _Pair:
    def __init__(self, producer: str, consumer: str, chain: List[fx.Node]):
        self.producer, self.consumer, self.chain = producer, consumer, chain


def _describe(node: fx.Node) -> str:
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"{node.op} {target!r}"


def _is_elementwise(node: fx.Node, modules: Dict[str, nn.Module], prev: fx.Node) -> bool:
    if not node.args or node.args[0] is not prev:
        return False
    if any(isinstance(a, fx.Node) for a in list(node.args[1:]) + list(node.kwargs.values())):
        return False
    if node.op == "call_module":
        return isinstance(modules[node.target], ELEMENTWISE_MODULES)
    if node.op == "call_function":
        return node.target in ELEMENTWISE_FUNCTIONS
    return node.op == "call_method" and node.target in ELEMENTWISE_METHODS


def _follow(gm: fx.GraphModule, node: fx.Node, modules: Dict[str, nn.Module],
            calls: Dict[str, int]) -> Tuple[Optional[_Pair], str]:
    """(pair, "") if the producer `node` feeds one Linear through element-wise ops only, else (None, why not)."""
    name = node.target
    if calls[name] > 1:
        return None, f"module {name!r} is called {calls[name]} times"
    chain: List[fx.Node] = []
    cur = node
    while True:
        users = list(cur.users)
        if len(users) != 1:
            what = ", ".join(_describe(u) for u in users) or "nothing (graph output unused)"
            return None, f"its output is read by {len(users)} ops ({what})"
        nxt = users[0]
        kind = _layer_kind(modules[name])
        if nxt.op == "call_module" and _layer_kind(modules[nxt.target]) == kind and nxt.args[0] is cur \
                and len(nxt.args) == 1 and not nxt.kwargs:
            if calls[nxt.target] > 1:
                return None, f"its consumer {nxt.target!r} is called {calls[nxt.target]} times"
            return _Pair(name, nxt.target, chain), ""
        is_bn = nxt.op == "call_module" and kind == "conv" and type(modules[nxt.target]) is nn.BatchNorm2d \
            and nxt.args[0] is cur and len(nxt.args) == 1
        if not is_bn and not _is_elementwise(nxt, modules, cur):
            return None, f"its output goes to {_describe(nxt)}, which prune_neurons cannot follow"
        chain.append(nxt)
        cur = nxt


def _chain_at_zero(gm: fx.GraphModule, chain: List[fx.Node], like: torch.Tensor) -> float:
    """The element-wise chain applied to 0 (what a zeroed neuron emits after its activation)."""
    t = torch.zeros(1, dtype=like.dtype, device=like.device)
    with torch.no_grad():
        for node in chain:
            rest, kw = node.args[1:], node.kwargs
            if node.op == "call_module":
                mod = gm.get_submodule(node.target)
                # dropout keeps 0 at 0 (and must not draw random numbers here); a removed channel's BatchNorm is
                # zeroed in the masked model (gamma = beta = 0), so it emits 0 too
                if not isinstance(mod, (nn.Dropout, nn.AlphaDropout, nn.BatchNorm2d)):
                    t = mod(t)
            elif node.op == "call_function":
                if node.target is not F.dropout:
                    t = node.target(t, *rest, **kw)
            else:
                t = getattr(t, node.target)(*rest, **kw)
    return float(t.reshape(-1)[0])


def _scores(criterion: str, model: nn.Module, pairs: List[_Pair], example_inputs, generator) -> Dict[str, torch.Tensor]:
    out: Dict[str, torch.Tensor] = {}
    if criterion in ("l1", "l2"):
        p = 1 if criterion == "l1" else 2
        for pair in pairs:
            w = model.get_submodule(pair.producer).weight.detach().float()
            out[pair.producer] = torch.linalg.vector_norm(w.reshape(w.shape[0], -1), ord=p, dim=1)
    elif criterion == "random":
        for pair in pairs:
            n = _width(model.get_submodule(pair.producer))
            out[pair.producer] = torch.rand(n, generator=generator)
    else:
        # mean |activation| of each neuron after its element-wise chain = mean |input| of the consumer
        sums: Dict[str, torch.Tensor] = {}
        counts: Dict[str, int] = {}
        hooks = []
        for pair in pairs:
            def hook(mod, args, key=pair.producer):
                a = args[0].detach().float().abs()
                a = a.movedim(1, -1) if isinstance(mod, nn.Conv2d) else a
                a = a.reshape(-1, a.shape[-1])
                sums[key] = sums.get(key, 0) + a.sum(0)
                counts[key] = counts.get(key, 0) + a.shape[0]
            hooks.append(model.get_submodule(pair.consumer).register_forward_pre_hook(hook))
        try:
            with torch.no_grad():
                for batch in example_inputs:
                    model(*batch) if isinstance(batch, (tuple, list)) else model(batch)
        finally:
            for h in hooks:
                h.remove()
        for pair in pairs:
            if pair.producer not in sums:
                raise ValueError(f"example_inputs: layer {pair.producer!r} was not reached by any example input")
            out[pair.producer] = (sums[pair.producer] / counts[pair.producer]).cpu()
    return out


def _set(module: nn.Module, name: str, value: Optional[torch.Tensor]) -> None:
    old = getattr(module, name)
    if isinstance(old, nn.Parameter) or (old is None and name == "bias"):
        grad = old.requires_grad if isinstance(old, nn.Parameter) else module.weight.requires_grad
        setattr(module, name, nn.Parameter(value, requires_grad=grad))
    else:
        module._buffers[name] = value


def _apply(gm: fx.GraphModule, pair: _Pair, keep: torch.Tensor, removed: torch.Tensor, a0: float) -> None:
    producer, consumer = gm.get_submodule(pair.producer), gm.get_submodule(pair.consumer)
    conv = isinstance(producer, nn.Conv2d)
    pads = conv and (consumer.padding != "valid" if isinstance(consumer.padding, str)
                     else any(p != 0 for p in consumer.padding))
    if pads and a0 != 0.0 and removed.numel():
        raise ValueError(f"layer {pair.producer!r}: its removed channels emit act(0) = {a0:g} and {pair.consumer!r} "
                         "zero-pads its input, so their contribution is not a constant to fold into the bias")
    with torch.no_grad():
        keep_dev = keep.to(producer.weight.device)
        _set(producer, "weight", producer.weight[keep_dev].clone())
        if producer.bias is not None:
            _set(producer, "bias", producer.bias[keep_dev].clone())
        if MASK in producer._buffers:
            producer._buffers[MASK] = producer._buffers[MASK][keep_dev].clone()
        for node in pair.chain:
            bn = gm.get_submodule(node.target) if node.op == "call_module" else None
            if isinstance(bn, nn.BatchNorm2d):
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    if getattr(bn, attr) is not None:
                        _set(bn, attr, getattr(bn, attr)[keep_dev].clone())
                bn.num_features = keep.numel()
        wc = consumer.weight
        keep_c, removed_c = keep.to(wc.device), removed.to(wc.device)
        if a0 != 0.0 and removed.numel():
            shift = wc[:, removed_c].reshape(wc.shape[0], -1).sum(dim=1) * a0
            base = consumer.bias if consumer.bias is not None else torch.zeros_like(shift)
            _set(consumer, "bias", (base + shift).clone())
        _set(consumer, "weight", wc[:, keep_c].clone())
        if MASK in consumer._buffers:
            consumer._buffers[MASK] = consumer._buffers[MASK][:, keep_c].clone()
        if conv:
            producer.out_channels = consumer.in_channels = keep.numel()
        else:
            producer.out_features = consumer.in_features = keep.numel()


def prune_neurons(
    model: nn.Module,
    amount: Union[float, int],
    *,
    criterion: str = "l1",
    example_inputs: Optional[Sequence] = None,
    round_to: int = 8,
    include: Optional[Sequence[str]] = None,
    generator: Optional[torch.Generator] = None,
) -> Dict[str, torch.Tensor]:
    """Removes ``amount`` of the output neurons (a fraction, or a count per layer) of every prunable Linear layer
    (output channels of every prunable Conv2d) and the matching inputs of its consumer, in place; the model gets
    physically smaller.

    Args:
        criterion: ``"l1"`` / ``"l2"`` norm of the neuron's weight row, ``"activation"`` (mean |activation| after
            the element-wise chain over ``example_inputs``: an iterable of inputs or of argument tuples), or
            ``"random"`` (with ``generator``). The lowest-scoring neurons go (ties: lower index first).
        round_to: the number of neurons kept is rounded up to a multiple of this (SIMD-friendly widths).
        include: names of the producer layers to prune (default: every layer that can be followed); a named layer
            that cannot be followed raises ValueError saying why.

    Returns ``{producer name: indices of the kept neurons}``. Optimizers holding the old parameters must be rebuilt.

    Example::

        >>> model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> kept = fastdistill.compress.prune_neurons(model, 0.5)
        >>> model[0].out_features, model[2].in_features
        (32, 32)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: expected one of {CRITERIA}, got {criterion!r}")
    if criterion == "activation" and example_inputs is None:
        raise ValueError("example_inputs: required for criterion='activation'")
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"round_to: expected an int >= 1, got {round_to!r}")
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:
        raise ValueError(f"model: prune_neurons needs a torch.fx-traceable model to follow layer outputs; tracing "
                         f"{type(model).__name__} failed: {type(exc).__name__}: {exc}") from None
    modules = dict(gm.named_modules())
    calls: Dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs: List[_Pair] = []
    reasons: Dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and _layer_kind(modules[node.target]) and node.target not in reasons \
                and all(p.producer != node.target for p in pairs):
            pair, why = _follow(gm, node, modules, calls)
            if pair is None:
                reasons[node.target] = why
            else:
                pairs.append(pair)
    if include is not None:
        wanted = [include] if isinstance(include, str) else list(include)
        for name in wanted:
            if name in reasons:
                raise ValueError(f"layer {name!r}: cannot prune its neurons: {reasons[name]}")
            if all(p.producer != name for p in pairs):
                raise ValueError(f"layer {name!r}: not an nn.Linear called by the model")
        pairs = [p for p in pairs if p.producer in wanted]
    if not pairs:
        raise ValueError("model: no Linear layer feeds another Linear through element-wise ops only; nothing to "
                         f"prune (per layer: {reasons})")
    scores = _scores(criterion, model, pairs, example_inputs, generator)
    kept: Dict[str, torch.Tensor] = {}
    for pair in pairs:
        producer = model.get_submodule(pair.producer)
        n = _width(producer)
        keep_n = n - prune_count(amount, n, "amount")
        keep_n = min(n, math.ceil(keep_n / round_to) * round_to)
        order = torch.sort(scores[pair.producer], stable=True).indices
        removed = order[: n - keep_n].sort().values
        keep = order[n - keep_n:].sort().values
        a0 = _chain_at_zero(gm, pair.chain, producer.weight) if removed.numel() else 0.0
        _apply(gm, pair, keep, removed, a0)
        kept[pair.producer] = keep
    return kept
