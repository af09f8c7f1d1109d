"""The channel structure of a model, read from its ``torch.export`` graph: which parameter dimensions must shrink
together, and the in-place edit that removes channels from all of them.

The model is exported (ATen-level graph, parameters as named placeholders, every intermediate with its shape) and
each tensor dimension that carries channels is followed through the graph. Channels meet in one *group* when an op
ties them together:

* ``linear`` / ``conv``: the layer's input channels are its weight's columns (dim 1); its output channels are its
  weight's rows and bias entries (a new channel space); ``embedding``: the output channels are the table's columns;
* ``layer_norm`` / ``rms_norm`` (over the last dimension) and ``batch_norm``: their parameters (and running
  statistics) index the channels they normalise;
* element-wise ops (``add``, ``mul``, activations, dropout, ...) tie the channels of their operands: a residual
  ``x + f(x)`` puts the producers of ``x`` and of ``f(x)`` and every LayerNorm along the stream into one group;
* a reshape that splits channels into ``(heads, head_dim)`` (attention) makes the group prunable in whole heads;
  ``scaled_dot_product_attention`` (or the eager ``matmul``/``softmax`` form) ties the heads of q, k and v, and the
  reshape back makes them the input columns of the output projection;
* views, transposes, pooling, ``select``/``slice``/reductions over *other* dimensions carry the channels along.

A group cannot be pruned (its ``reason`` says why) when its channels reach the model's output or come from its
input, meet a tensor that is not followed (a buffer, a computed weight), or go through an op that mixes or
reorders them (``cat`` along them, a reshape that merges them with another dimension, a reduction over them, an op
this module does not know).

Removing channels edits the model in place: each member tensor is sliced along its dimension (tied parameters
stay tied), ``weight_mask`` buffers follow their weights, layer attributes (``in_features``, ``out_channels``,
``normalized_shape``, ``num_features``, ``embedding_dim``, attention modules' head counts) are updated, and the
result is an ordinary, physically smaller ``nn.Module``.

Exactness: the masked model is the model with every group entry of a removed channel set to zero (producer rows,
biases, norm scales and shifts; not the consumers' columns). Where the value a removed channel then carries into a
consumer is a known constant (``act(0)`` after an activation, ``0`` after a BatchNorm), it is folded into that
consumer's bias and the pruned model computes what the masked model computes. A group holding a LayerNorm is not
exact (the norm's statistics change with the channel count): such pruning needs recovery (fine-tuning or
distillation).
"""
from __future__ import annotations

import operator
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import torch
import torch.fx as fx
from torch import Tensor, nn

from .prune import MASK

aten = torch.ops.aten

# Ops that pass their (single tensor) input through element by element without being tagged pointwise.
_PASS_THROUGH = {"dropout", "alpha_dropout", "feature_dropout", "clone", "contiguous", "alias", "detach", "to",
                 "_to_copy", "type_as", "lift_fresh_copy", "_assert_tensor_metadata"}
_RESHAPES = {"view", "reshape", "_unsafe_view", "flatten", "unflatten", "squeeze", "unsqueeze"}
_REDUCTIONS = {"mean", "sum", "amax", "amin", "var", "std", "prod", "logsumexp", "norm"}
_POOLS = {"max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
          "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
          "adaptive_max_pool2d", "adaptive_max_pool3d", "max_pool2d_with_indices"}
_CONVS = {"conv1d", "conv2d", "conv3d", "convolution"}
_SOFTMAX = {"softmax", "_softmax", "log_softmax", "_log_softmax"}
_HEAD_COUNT_ATTRS = ("num_attention_heads", "num_heads", "n_heads", "n_head")
_HEAD_WIDTH_ATTRS = ("all_head_size", "inner_dim")


# ------------------------------------------------------------------------------------------------ results


@dataclass
class ChannelGroup:
    """Channels of a model that can only be removed together.

    Attributes:
        name: the first layer (in graph order) producing the channels (the layer name ``prune_neurons`` reports).
        kind: ``"neurons"`` (one producer: an MLP/FFN hidden layer, conv channels), ``"residual"`` (several
            producers summed: a residual stream with its norms and embeddings), ``"heads"`` (attention heads) or
            ``"input"`` (channels the model's inputs bring in: never pruned).
        width: number of channels; ``unit``: channels per prunable unit (the head size for heads, else 1).
        producers / consumers: layers writing / reading the channels.
        members: ``(tensor name, dim)`` of every parameter or buffer dimension indexed by the channels.
        reason: why the group cannot be pruned, or None.
        exact: whether removing channels computes what zeroing them computes (see the module docstring).
    """

    name: str
    kind: str
    width: int
    unit: int
    producers: List[str]
    consumers: List[str]
    members: List[Tuple[str, int]]
    reason: Optional[str]
    exact: bool
    edges: List["_Edge"] = field(default_factory=list, repr=False)
    owners: List[str] = field(default_factory=list, repr=False)

    @property
    def units(self) -> int:
        """Number of prunable units (heads for attention, channels otherwise)."""
        return self.width // self.unit


@dataclass
class _Edge:
    """A layer reading the group's channels as its input: its weight's dim-1 columns."""

    module: str
    weight: str
    const: Optional[float]  # what a removed (zeroed) channel carries into it; None: not a constant
    pads: bool  # a zero-padding convolution (a non-zero constant is not constant at its borders)


class _Space:
    def __init__(self, size: int):
        self.size = size
        self.unit = 1
        self.reasons: List[str] = []
        self.members: List[Tuple[str, int]] = []
        self.producers: List[str] = []
        self.edges: List[_Edge] = []
        self.owners: List[str] = []  # modules whose reshape split the channels into heads
        self.norm = False

    def merge(self, other: "_Space") -> None:
        if other.size != self.size:
            self.reasons.append(f"it is tied to channels of another size ({other.size} vs {self.size})")
        if self.unit > 1 and other.unit > 1 and self.unit != other.unit:
            self.reasons.append(f"its heads have different sizes ({self.unit} and {other.unit})")
        self.unit = max(self.unit, other.unit)
        for name in ("reasons", "members", "producers", "edges", "owners"):
            getattr(self, name).extend(getattr(other, name))
        self.norm |= other.norm


Tag = Tuple[str, int]  # ("ch" | "head" | "inner", space id)


# ------------------------------------------------------------------------------------------------ capture


def batches_of(example_inputs: Any) -> List[Any]:
    """``example_inputs`` as a list of batches (a tensor, a tuple of positional arguments or a dict of keyword
    arguments each); a single tensor, tuple or dict is one batch."""
    if isinstance(example_inputs, (Tensor, Mapping, tuple)):
        return [example_inputs]
    try:
        batches = list(example_inputs)
    except TypeError:
        raise TypeError("example_inputs: expected a batch (tensor, tuple of arguments, dict of keyword arguments) "
                        f"or an iterable of batches, got {type(example_inputs).__name__}") from None
    if not batches:
        raise ValueError("example_inputs: got no batch")
    return batches


def call_model(model: nn.Module, batch: Any) -> Any:
    """``model`` applied to one batch (a tensor, a tuple/list of positional arguments, a dict of keywords)."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


LossFn = Callable[[Any, Any], Tensor]  # (model output, target) -> scalar loss


def aligned_targets(batches: List[Any], targets: Optional[Sequence[Any]]) -> List[Any]:
    """``targets`` (one per batch, e.g. its labels) checked against the batches; Nones without them."""
    if targets is None:
        return [None] * len(batches)
    targets = list(targets)
    if len(targets) != len(batches):
        raise ValueError(f"targets: expected one per batch ({len(batches)}), got {len(targets)}")
    return targets


def per_batch_gradients(params: Dict[str, Tensor], batches: List[Any], targets: Optional[Sequence[Any]],
                        loss_of: Callable[[Any, Any], Tensor]) -> Iterator[None]:
    """Yields once per batch, with every parameter's ``.grad`` holding the gradient of ``loss_of(batch, target)``
    for that batch alone; the parameters' gradients and ``requires_grad`` flags are restored afterwards."""
    saved = {name: (p.grad, p.requires_grad) for name, p in params.items()}
    try:
        for p in params.values():
            p.requires_grad_(True)
        for batch, target in zip(batches, aligned_targets(batches, targets)):
            for p in params.values():
                p.grad = None
            loss = loss_of(batch, target)
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise ValueError(f"loss_fn: expected a scalar tensor, got {type(loss).__name__}")
            loss.backward()
            yield
    finally:
        for name, p in params.items():
            p.grad, flag = saved[name]
            p.requires_grad_(flag)


def first_tensor(value: Any) -> Optional[Tensor]:
    """The main tensor of a module's output: the output itself, a tuple's first element, or a Hugging Face
    ModelOutput's ``last_hidden_state``."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    hidden = getattr(value, "last_hidden_state", None)
    return hidden if isinstance(hidden, Tensor) else None


def run_hooked(model: nn.Module, batches: Iterable[Any], handles: List[Any]) -> None:
    """Runs the batches through ``model`` without gradients, then removes the hook ``handles``."""
    try:
        with torch.no_grad():
            for batch in batches:
                call_model(model, batch)
    finally:
        for h in handles:
            h.remove()


def _synthetic_input(model: nn.Module) -> Tuple[Any, ...]:
    """An input for models that start with their first registered Linear / Conv / Embedding layer."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return (torch.randn(2, module.in_features, device=module.weight.device),)
        if isinstance(module, nn.modules.conv._ConvNd) and not isinstance(module, nn.modules.conv._ConvTransposeNd):
            dims = len(module.kernel_size)
            return (torch.randn(2, module.in_channels, *([32] * dims), device=module.weight.device),)
        if isinstance(module, nn.Embedding):
            return (torch.zeros(2, 8, dtype=torch.long, device=module.weight.device),)
    raise ValueError("example_inputs: the model has no Linear, Conv or Embedding layer to make an input for; "
                     "pass example_inputs")


def export(model: nn.Module, example_inputs: Any = None) -> torch.export.ExportedProgram:
    """The model's ATen graph (exported in eval mode on the first example batch; the training flags are restored).
    Without ``example_inputs``, a random input is made for the model's first Linear / Conv / Embedding layer."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    synthetic = example_inputs is None
    batch = _synthetic_input(model) if synthetic else batches_of(example_inputs)[0]
    args, kwargs = ((), dict(batch)) if isinstance(batch, Mapping) else \
        (tuple(batch) if isinstance(batch, (tuple, list)) else (batch,), {})
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            return torch.export.export(model, args, kwargs)
    except Exception as exc:
        hint = " (no example_inputs were given: a random input was made for the first layer; pass example_inputs)" \
            if synthetic else ""
        raise ValueError(f"model: the layer structure is read from a torch.export graph; exporting "
                         f"{type(model).__name__} failed{hint}: {type(exc).__name__}: {str(exc)[:500]}") from None
    finally:
        for m, mode in modes.items():
            m.training = mode


# ------------------------------------------------------------------------------------------------ analysis


def _op_name(node: fx.Node) -> str:
    target = node.target
    packet = getattr(target, "overloadpacket", None)
    if packet is not None:
        return packet.__name__
    return getattr(target, "__name__", str(target))


def _describe(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    where = f" in {list(stack.values())[-1][0]!r}" if stack and list(stack.values())[-1][0] else ""
    return f"{node.target}{where}"


def _shape(node: Any) -> Optional[Tuple[int, ...]]:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    if isinstance(val, Tensor):
        try:
            return tuple(int(s) for s in val.shape)
        except TypeError:  # symbolic sizes
            return None
    return None


def _reshape_map(ins: Sequence[int], outs: Sequence[int]) -> Tuple[Dict[int, int], Dict[int, Tuple[int, int]],
                                                                   Dict[Tuple[int, int], int]]:
    """How the dimensions of a row-major reshape correspond: ``(same, split, merged)``: input dim -> output dim
    holding exactly its elements; input dim -> (outer, inner) output dims it splits into; (input dim, next input
    dim) -> output dim they merge into. Dims of size 1 are ignored."""
    def spans(shape):
        out, inner = {}, 1
        for i in reversed(range(len(shape))):
            if shape[i] != 1:
                out[i] = (shape[i], inner)
            inner *= shape[i]
        return out

    si, so = spans(ins), spans(outs)
    by_inner_o = {v[1]: (j, v[0]) for j, v in so.items()}
    by_inner_i = {v[1]: (i, v[0]) for i, v in si.items()}
    same, split, merged = {}, {}, {}
    for i, (size, inner) in si.items():
        j = by_inner_o.get(inner)
        if j is None:
            continue
        if j[1] == size:
            same[i] = j[0]
        elif size % j[1] == 0:
            outer = by_inner_o.get(inner * j[1])
            if outer is not None and outer[1] * j[1] == size:
                split[i] = (outer[0], j[0])
    for j, (size, inner) in so.items():
        low = by_inner_i.get(inner)
        if low is None or low[1] >= size:
            continue
        high = by_inner_i.get(inner * low[1])
        if high is not None and high[1] * low[1] == size:
            merged[(high[0], low[0])] = j
    return same, split, merged


class _Analysis:
    def __init__(self, ep: torch.export.ExportedProgram, model: nn.Module):
        self.ep, self.model = ep, model
        sig = ep.graph_signature
        # export names a tied tensor after any one of its holders: use the model's own (first) name for it
        canonical = {id(t): n for n, t in list(model.named_parameters()) + list(model.named_buffers())}
        self.params: Dict[str, str] = {k: canonical.get(id(model.get_parameter(v)), v)
                                       for k, v in sig.inputs_to_parameters.items()}
        self.buffers: Dict[str, str] = {k: canonical.get(id(model.get_buffer(v)), v)
                                        for k, v in sig.inputs_to_buffers.items()}
        self.user_inputs: Set[str] = set(sig.user_inputs)
        self.parent: List[int] = []
        self.spaces: Dict[int, _Space] = {}
        self.pspaces: Dict[Tuple[str, int], int] = {}
        self.tags: Dict[fx.Node, Any] = {}
        self.const: Dict[fx.Node, Optional[float]] = {}
        self.order: Dict[str, int] = {}

    # ---- union-find over channel spaces
    def new(self, size: int, reason: Optional[str] = None) -> int:
        sid = len(self.parent)
        self.parent.append(sid)
        self.spaces[sid] = _Space(size)
        if reason:
            self.spaces[sid].reasons.append(reason)
        return sid

    def find(self, sid: int) -> int:
        while self.parent[sid] != sid:
            self.parent[sid] = self.parent[self.parent[sid]]
            sid = self.parent[sid]
        return sid

    def unite(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.spaces[ra].merge(self.spaces.pop(rb))
        return ra

    def space(self, sid: int) -> _Space:
        return self.spaces[self.find(sid)]

    def block(self, sid: int, reason: str) -> None:
        self.space(sid).reasons.append(reason)

    def pspace(self, name: str, dim: int, size: int) -> int:
        """The channel space of dimension ``dim`` of the parameter/buffer ``name``."""
        key = (name, dim)
        if key not in self.pspaces:
            sid = self.new(size)
            self.spaces[sid].members.append(key)
            self.pspaces[key] = sid
            self.order.setdefault(name.rpartition(".")[0], len(self.order))
        return self.pspaces[key]

    # ---- tags of graph values
    def tensor_name(self, node: Any) -> Optional[str]:
        if isinstance(node, fx.Node) and node.op == "placeholder":
            return self.params.get(node.name) or self.buffers.get(node.name)
        return None

    def tags_of(self, node: Any) -> Dict[int, Tag]:
        if not isinstance(node, fx.Node):
            return {}
        if node in self.tags:
            t = self.tags[node]
            return t if isinstance(t, dict) else {}
        name = self.params.get(node.name) if node.op == "placeholder" else None
        shape = _shape(node)
        if name is not None and shape is not None and node.meta["val"].is_floating_point():
            return {d: ("ch", self.pspace(name, d, s)) for d, s in enumerate(shape)}
        return {}

    def source(self, node: Any) -> str:
        if isinstance(node, fx.Node) and node.op == "placeholder":
            if node.name in self.user_inputs:
                return f"the model input {node.name!r}"
            name = self.buffers.get(node.name) or self.params.get(node.name) or node.name
            return f"buffer {name!r}"
        return f"the output of {_describe(node)}" if isinstance(node, fx.Node) else "a constant"

    def tag_at(self, node: Any, dim: int, why: str) -> Tag:
        """The tag of ``node``'s dimension ``dim``; an untracked dimension gets a fresh space that cannot be
        pruned (``why``: how the op uses it)."""
        shape = _shape(node)
        dim = dim % len(shape)
        tag = self.tags_of(node).get(dim)
        if tag is None:
            tag = ("ch", self.new(shape[dim], f"{why} {self.source(node)}"))
        return tag

    def block_all(self, node: Any, reason: str) -> None:
        for _, sid in self.tags_of(node).values():
            self.block(sid, reason)

    # ---- the walk
    def run(self) -> None:
        for node in self.ep.graph.nodes:
            if node.op == "call_function":
                self.visit(node)
            elif node.op == "output":
                for arg in _flat(node.args):
                    self.block_all(arg, "they reach the model's output")

    def visit(self, node: fx.Node) -> None:
        if node.target is operator.getitem:
            src, idx = node.args
            t = self.tags.get(src)
            if isinstance(t, list) and idx < len(t):
                self.tags[node] = t[idx]
                self.const[node] = self.const.get(src)
            return
        val = node.meta.get("val")
        tensor_args = [a for a in _flat(node.args) + _flat(list(node.kwargs.values()))
                       if isinstance(a, fx.Node) and isinstance(a.meta.get("val"), Tensor)]
        if not isinstance(val, (Tensor, tuple, list)):
            return  # asserts, sizes: no tensor flows on
        name = _op_name(node)
        handler = getattr(self, f"op_{name}", None)
        if handler is None:
            if name in _CONVS:
                handler = self.op_conv
            elif name in _RESHAPES:
                handler = self.op_reshape
            elif name in _REDUCTIONS:
                handler = self.op_reduce
            elif name in _POOLS:
                handler = self.op_pool
            elif name in _SOFTMAX:
                handler = self.op_softmax
            elif name in _PASS_THROUGH or torch.Tag.pointwise in getattr(node.target, "tags", ()):
                handler = self.op_pointwise
        if handler is None or not handler(node, tensor_args):
            for a in tensor_args:
                self.block_all(a, f"they go through {_describe(node)}, which cannot be followed")

    def out(self, node: fx.Node, tags: Dict[int, Tag], const: Optional[float]) -> bool:
        self.tags[node] = tags
        self.const[node] = const
        return True

    def module_of(self, tensor: str) -> str:
        return tensor.rpartition(".")[0]

    def op_linear(self, node, _):
        x, w = node.args[0], node.args[1]
        b = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        wname = self.tensor_name(w)
        if wname is None or wname not in self.params.values():
            return False
        n_out, n_in = _shape(w)
        xs = _shape(x)
        tx = self.tag_at(x, -1, "its input is")
        if tx[0] != "ch":
            self.block(tx[1], f"heads reach {_describe(node)} without a reshape")
        sin = self.unite(tx[1], self.pspace(wname, 1, n_in))
        self.space(sin).edges.append(_Edge(self.module_of(wname), wname, self.const.get(x, None) if
                                           self.tags_of(x) else None, False))
        sout = self.pspace(wname, 0, n_out)
        self.space(sout).producers.append(self.module_of(wname))
        if isinstance(b, fx.Node):
            sout = self.unite(sout, self.pspace(self.tensor_name(b), 0, n_out))
        tags = {d: t for d, t in self.tags_of(x).items() if d != len(xs) - 1}
        tags[len(xs) - 1] = ("ch", sout)
        return self.out(node, tags, 0.0)

    def op_conv(self, node, _):
        args = list(node.args)
        x, w = args[0], args[1]
        b = args[2] if len(args) > 2 else None
        name = _op_name(node)
        if name == "convolution":  # (x, w, b, stride, padding, dilation, transposed, output_padding, groups)
            if args[6]:
                return False
            padding, groups = args[4], args[8]
        else:
            padding = args[4] if len(args) > 4 else node.kwargs.get("padding", 0)
            groups = args[6] if len(args) > 6 else node.kwargs.get("groups", 1)
        wname = self.tensor_name(w)
        if wname is None or wname not in self.params.values():
            return False
        wshape = _shape(w)
        pads = padding != "valid" and (isinstance(padding, str) or any(int(p) != 0 for p in _flat([padding])))
        tx = self.tag_at(x, 1, "its input is")
        sout = self.pspace(wname, 0, wshape[0])
        self.space(sout).producers.append(self.module_of(wname))
        if groups == 1:
            sin = self.unite(tx[1], self.pspace(wname, 1, wshape[1]))
            self.space(sin).edges.append(_Edge(self.module_of(wname), wname,
                                               self.const.get(x) if self.tags_of(x) else None, pads))
        elif wshape[1] == 1 and groups == wshape[0] == _shape(x)[1]:  # depthwise: channel c reads channel c
            sout = self.unite(sout, tx[1])
        else:
            self.block(tx[1], f"{_describe(node)} is a grouped convolution")
            self.block(sout, f"{_describe(node)} is a grouped convolution")
        if isinstance(b, fx.Node):
            sout = self.unite(sout, self.pspace(self.tensor_name(b), 0, wshape[0]))
        tags = {d: t for d, t in self.tags_of(x).items() if d != 1}
        tags[1] = ("ch", sout)
        return self.out(node, tags, 0.0)

    def op_embedding(self, node, _):
        w, idx = node.args[0], node.args[1]
        wname = self.tensor_name(w)
        if wname is None or wname not in self.params.values():
            return False
        rows, cols = _shape(w)
        sout = self.pspace(wname, 1, cols)
        self.space(sout).producers.append(self.module_of(wname))
        self.space(self.pspace(wname, 0, rows)).reasons.append("they are embedding rows (token ids)")
        tags = dict(self.tags_of(idx))
        tags[len(_shape(idx))] = ("ch", sout)
        return self.out(node, tags, 0.0)

    def _norm(self, node, x, params: Sequence[Any], dim: int, const: Optional[float]) -> bool:
        tx = self.tag_at(x, dim, "it normalises")
        sid = tx[1]
        size = _shape(x)[dim]
        for p in params:
            if isinstance(p, fx.Node):
                sid = self.unite(sid, self.pspace(self.tensor_name(p), 0, size))
        return self.out(node, dict(self.tags_of(x)) or {dim % len(_shape(x)): tx}, const)

    def op_layer_norm(self, node, _):
        x, shape = node.args[0], node.args[1]
        w = node.args[2] if len(node.args) > 2 else node.kwargs.get("weight")
        b = node.args[3] if len(node.args) > 3 else node.kwargs.get("bias")
        if len(shape) != 1:
            return False
        ok = self._norm(node, x, [w, b], -1, 0.0)
        self.space(self.tag_at(x, -1, "it normalises")[1]).norm = True
        return ok

    def op_rms_norm(self, node, _):
        x, shape = node.args[0], node.args[1]
        w = node.args[2] if len(node.args) > 2 else node.kwargs.get("weight")
        if len(shape) != 1:
            return False
        ok = self._norm(node, x, [w], -1, 0.0)
        self.space(self.tag_at(x, -1, "it normalises")[1]).norm = True
        return ok

    def op_batch_norm(self, node, _):
        x, w, b, rm, rv = node.args[:5]
        const = 0.0 if isinstance(w, fx.Node) and isinstance(b, fx.Node) else None
        return self._norm(node, x, [w, b, rm, rv], 1, const)

    def op__native_batch_norm_legit_no_training(self, node, ts):
        ok = self.op_batch_norm(node, ts)
        self.tags[node] = [self.tags[node], {}, {}]
        return ok

    op__native_batch_norm_legit_functional = op__native_batch_norm_legit_no_training

    def op_pointwise(self, node, tensor_args):
        shape = _shape(node)
        if shape is None:
            return False
        nd = len(shape)
        tags: Dict[int, Tag] = {}
        for j in range(nd):
            if shape[j] == 1:
                continue
            found = []
            for a in tensor_args:
                ashape = _shape(a)
                k = j - (nd - len(ashape))
                if k >= 0 and ashape[k] == shape[j]:
                    found.append((a, k, self.tags_of(a).get(k)))
            tagged = [t for _, _, t in found if t is not None]
            if not tagged:
                continue
            kinds = {t[0] for t in tagged}
            sid = tagged[0][1]
            for t in tagged[1:]:
                sid = self.unite(sid, t[1])
            if len(kinds) > 1:
                self.block(sid, f"{_describe(node)} combines heads with channels")
            for a, k, t in found:
                if t is None:
                    sid = self.unite(sid, self.tag_at(a, k, f"{_describe(node)} combines them with")[1])
            tags[j] = (tagged[0][0], sid)
        return self.out(node, tags, self._pointwise_const(node, tensor_args, tags))

    def _pointwise_const(self, node, tensor_args, tags) -> Optional[float]:
        if not tags:
            return None
        consts = {}
        for a in tensor_args:
            if not self.tags_of(a) or self.const.get(a) is None:
                # an operand that is not constant over the removed channels: only a product with 0 stays 0
                zero = _op_name(node) == "mul" and any(self.tags_of(t) and self.const.get(t) == 0.0
                                                       for t in tensor_args)
                return 0.0 if zero else None
            consts[a] = self.const[a]
        args = fx.node.map_arg(node.args, lambda n: torch.tensor(consts[n], dtype=torch.float32))
        kwargs = fx.node.map_arg(node.kwargs, lambda n: torch.tensor(consts[n], dtype=torch.float32))
        kwargs = {k: v for k, v in kwargs.items() if k not in ("device", "layout", "pin_memory", "memory_format")}
        try:
            with torch.no_grad():
                out = node.target(*args, **kwargs)
            return float(out.reshape(-1)[0])
        except Exception:  # e.g. an op that needs a real shape
            return None

    def op_reshape(self, node, tensor_args):
        x = node.args[0]
        ins, outs = _shape(x), _shape(node)
        if ins is None or outs is None:
            return False
        same, split, merged = _reshape_map(ins, outs)
        xt = self.tags_of(x)
        tags: Dict[int, Tag] = {}
        done: Set[int] = set()
        for (hi, lo), j in merged.items():
            th, tl = xt.get(hi), xt.get(lo)
            if th and tl and th[0] == "head" and tl[0] == "inner" and self.find(th[1]) == self.find(tl[1]):
                tags[j] = ("ch", th[1])
                done |= {hi, lo}
        for i, t in xt.items():
            if i in done:
                continue
            if i in same:
                tags[same[i]] = t
            elif i in split and t[0] == "ch":
                outer, inner = split[i]
                space = self.space(t[1])
                if space.unit > 1 and space.unit != outs[inner]:
                    space.reasons.append(f"{_describe(node)} splits them into heads of {outs[inner]}, "
                                         f"elsewhere of {space.unit}")
                space.unit = outs[inner]
                stack = node.meta.get("nn_module_stack") or {}
                if stack:
                    space.owners.append(list(stack.values())[-1][0])
                tags[outer], tags[inner] = ("head", t[1]), ("inner", t[1])
            else:
                self.block(t[1], f"{_describe(node)} reshapes them {ins} -> {outs}")
        return self.out(node, tags, self.const.get(x))

    def op_transpose(self, node, _):
        x, d0, d1 = node.args[0], node.args[1], node.args[2]
        n = len(_shape(x))
        perm = list(range(n))
        perm[d0 % n], perm[d1 % n] = perm[d1 % n], perm[d0 % n]
        return self._permute(node, x, perm)

    def op_t(self, node, _):
        return self._permute(node, node.args[0], list(reversed(range(len(_shape(node.args[0]))))))

    def op_permute(self, node, _):
        x = node.args[0]
        n = len(_shape(x))
        return self._permute(node, x, [d % n for d in node.args[1]])

    def _permute(self, node, x, perm):
        xt = self.tags_of(x)
        return self.out(node, {j: xt[i] for j, i in enumerate(perm) if i in xt}, self.const.get(x))

    def op_expand(self, node, _):
        x = node.args[0]
        shift = len(_shape(node)) - len(_shape(x))
        return self.out(node, {d + shift: t for d, t in self.tags_of(x).items()}, self.const.get(x))

    def op_select(self, node, _):
        x, dim = node.args[0], node.args[1] % len(_shape(node.args[0]))
        xt = self.tags_of(x)
        if dim in xt:
            return False
        return self.out(node, {(d if d < dim else d - 1): t for d, t in xt.items()}, self.const.get(x))

    def op_slice(self, node, _):
        x = node.args[0]
        shape = _shape(x)
        dim = (node.args[1] if len(node.args) > 1 else 0) % len(shape)
        xt = self.tags_of(x)
        if dim in xt and _shape(node)[dim] != shape[dim]:
            return False
        return self.out(node, dict(xt), self.const.get(x))

    def op_reduce(self, node, _):
        x = node.args[0]
        shape = _shape(x)
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if dims is None or (isinstance(dims, (list, tuple)) and not dims):
            dims = list(range(len(shape)))
        dims = {d % len(shape) for d in _flat([dims])}
        xt = self.tags_of(x)
        if dims & set(xt):
            return False
        keep = len(_shape(node)) == len(shape)
        tags = {(d if keep else d - sum(1 for r in dims if r < d)): t for d, t in xt.items()}
        c = self.const.get(x)
        return self.out(node, tags, c if _op_name(node) in ("mean", "amax", "amin") or c == 0.0 else None)

    def op_pool(self, node, _):
        x = node.args[0]
        name = _op_name(node)
        k = int(name.split("pool")[1][0])  # pooled (trailing) dims: max_pool2d -> 2
        xt = self.tags_of(x)
        n = len(_shape(x))
        if any(d >= n - k for d in xt):
            return False
        c = self.const.get(x)
        padded = name.startswith("avg") and len(node.args) > 3 and any(int(p) for p in _flat([node.args[3]]))
        out_tags = dict(xt)
        if name == "max_pool2d_with_indices":
            self.tags[node] = [out_tags, {}]
            self.const[node] = c
            return True
        return self.out(node, out_tags, None if padded and c != 0.0 else c)

    def op_softmax(self, node, _):
        x, dim = node.args[0], node.args[1] % len(_shape(node.args[0]))
        xt = self.tags_of(x)
        if dim in xt:
            return False
        return self.out(node, dict(xt), None)

    def op_scaled_dot_product_attention(self, node, _):
        q, k, v = node.args[:3]
        ts = [self.tags_of(t) for t in (q, k, v)]
        nd = len(_shape(q))
        heads = [t.get(nd - 3) for t in ts]
        inner = [t.get(nd - 1) for t in ts]
        if any(h is None or h[0] != "head" for h in heads) or any(i is None or i[0] != "inner" for i in inner):
            return False
        sid = heads[0][1]
        for h in heads[1:]:
            sid = self.unite(sid, h[1])
        for t in ts:  # sequence and batch dims must not carry channels
            for d, tag in t.items():
                if d not in (nd - 3, nd - 1):
                    self.block(tag[1], f"they are a sequence dimension of {_describe(node)}")
        # removed heads have zeroed q, k, v: their output is the attention-weighted mean of zeros
        return self.out(node, {nd - 3: ("head", sid), nd - 1: ("inner", sid)}, self.const.get(v) if ts[2] else None)

    def op_matmul(self, node, _):
        a, b = node.args[:2]
        sa, sb = _shape(a), _shape(b)
        if len(sa) < 2 or len(sb) < 2:
            return False
        ta, tb = self.tags_of(a), self.tags_of(b)
        ka, kb = ta.get(len(sa) - 1), tb.get(len(sb) - 2)
        if (ka is None) != (kb is None):
            return False
        if ka is not None:
            if ka[0] != "inner" or kb[0] != "inner":
                return False
            self.unite(ka[1], kb[1])
        nd = len(_shape(node))
        tags: Dict[int, Tag] = {}
        for j in range(nd - 2):  # batch dims, broadcast
            ja, jb = j - (nd - len(sa)), j - (nd - len(sb))
            found = [t for t in (ta.get(ja) if ja >= 0 else None, tb.get(jb) if jb >= 0 else None) if t]
            if found:
                sid = found[0][1]
                for t in found[1:]:
                    if t[0] != found[0][0]:
                        return False
                    sid = self.unite(sid, t[1])
                tags[j] = (found[0][0], sid)
        if len(sa) - 2 in ta:
            tags[nd - 2] = ta[len(sa) - 2]
        if len(sb) - 1 in tb:
            tags[nd - 1] = tb[len(sb) - 1]
        zero = any(t and self.const.get(x) == 0.0 for t, x in ((ta, a), (tb, b)))
        return self.out(node, tags, 0.0 if zero else None)

    op_bmm = op_matmul


def _flat(args: Any) -> List[Any]:
    out: List[Any] = []
    for a in args if isinstance(args, (list, tuple)) else [args]:
        if isinstance(a, (list, tuple)):
            out.extend(_flat(a))
        else:
            out.append(a)
    return out


def analyse(model: nn.Module, example_inputs: Any = None) -> List[ChannelGroup]:
    """Every group of coupled channels of ``model`` that holds a parameter of a layer, in graph order (see the
    module docstring). ``example_inputs``: a batch (or an iterable of batches; the first is used) to export with."""
    ep = export(model, example_inputs)
    an = _Analysis(ep, model)
    an.run()
    groups: List[ChannelGroup] = []
    roots = sorted({an.find(sid) for sid in an.pspaces.values()},
                   key=lambda r: min(an.order.get(an.module_of(m[0]), 1 << 30) for m in an.spaces[r].members))
    for root in roots:
        sp = an.spaces[root]
        if not sp.producers and not sp.edges:
            continue  # e.g. the token rows of an embedding table
        first = lambda m: an.order.get(m, 1 << 30)  # noqa: E731 (graph order)
        producers = sorted(dict.fromkeys(sp.producers), key=first)
        consumers = sorted(dict.fromkeys(e.module for e in sp.edges), key=first)
        kind = "heads" if sp.unit > 1 else "residual" if len(producers) > 1 else "neurons" if producers else "input"
        reasons = list(dict.fromkeys(sp.reasons))
        if not producers and not reasons:
            reasons.append("no layer produces them")
        if sp.size % sp.unit:
            reasons.append(f"{sp.size} channels do not split into heads of {sp.unit}")
        members = list(dict.fromkeys(sp.members))
        name = producers[0] if producers else f"<input of {consumers[0]}>"
        exact = not sp.norm and all(e.const is not None for e in sp.edges)
        groups.append(ChannelGroup(name, kind, sp.size, sp.unit, producers, consumers, members,
                                   "; ".join(reasons) if reasons else None, exact, list(sp.edges),
                                   list(dict.fromkeys(sp.owners))))
    return groups


# ------------------------------------------------------------------------------------------------ editing


def _holders(model: nn.Module) -> Dict[int, List[Tuple[nn.Module, str]]]:
    """id(tensor) -> every (module, attribute) holding it (tied parameters appear more than once)."""
    out: Dict[int, List[Tuple[nn.Module, str]]] = defaultdict(list)
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for attr, t in store.items():
                if t is not None:
                    out[id(t)].append((module, attr))
    return out


def _tensor(model: nn.Module, name: str) -> Tensor:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    t = module._parameters.get(attr)
    return t if t is not None else module._buffers[attr]


def _replace(holders: Dict[int, List[Tuple[nn.Module, str]]], old: Tensor, new: Tensor) -> None:
    """Puts ``new`` wherever ``old`` was held (a Parameter stays a Parameter, tied ones stay tied)."""
    value = nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new
    owners = holders.pop(id(old))
    for module, attr in owners:
        if attr in module._parameters:
            module._parameters[attr] = value
        else:
            module._buffers[attr] = value
    holders[id(value)] = owners


def check_foldable(group: ChannelGroup, removes: bool) -> None:
    """ValueError when removing channels of ``group`` cannot keep the masked model's outputs because a removed
    channel's non-zero constant would reach a zero-padding convolution (not constant at the borders)."""
    if not removes:
        return
    for e in group.edges:
        if e.pads and e.const not in (None, 0.0):
            raise ValueError(f"layer {group.name!r}: its removed channels emit act(0) = {e.const:g} and "
                             f"{e.module!r} zero-pads its input, so their contribution is not a constant to fold "
                             "into the bias")


def remove_channels(model: nn.Module, group: ChannelGroup, keep_units: Tensor,
                    holders: Optional[Dict[int, List[Tuple[nn.Module, str]]]] = None) -> Tensor:
    """Removes every channel of ``group`` not in ``keep_units`` (sorted unit indices) from the model, in place;
    returns the kept channel indices. Constants that removed channels carry into consumers are folded into the
    consumers' biases first."""
    holders = _holders(model) if holders is None else holders
    unit = group.unit
    keep = (keep_units[:, None] * unit + torch.arange(unit)).reshape(-1)
    removed = torch.ones(group.width, dtype=torch.bool)
    removed[keep] = False
    gone = removed.nonzero().reshape(-1)
    with torch.no_grad():
        if gone.numel():
            for e in group.edges:
                if e.const in (None, 0.0):
                    continue
                consumer = model.get_submodule(e.module)
                w = _tensor(model, e.weight)
                shift = w.index_select(1, gone.to(w.device)).reshape(w.shape[0], -1).sum(1) * e.const
                bias = consumer.bias
                if bias is None:
                    consumer.bias = nn.Parameter(shift.clone(), requires_grad=w.requires_grad)
                    holders[id(consumer.bias)] = [(consumer, "bias")]
                else:
                    _replace(holders, bias, (bias + shift).detach())
        for name, dim in group.members:
            t = _tensor(model, name)
            idx = keep.to(t.device)
            owners = holders[id(t)]
            _replace(holders, t, t.detach().index_select(dim, idx).clone())
            for module, a in owners:
                if a == "weight" and MASK in module._buffers:
                    module._buffers[MASK] = module._buffers[MASK].index_select(dim, idx).clone()
                sync_attributes(module)
    if gone.numel() and unit > 1:
        heads = keep_units.numel()
        for owner in group.owners:
            module = model.get_submodule(owner)
            for attr in _HEAD_COUNT_ATTRS:
                if getattr(module, attr, None) == group.units:
                    setattr(module, attr, heads)
            for attr in _HEAD_WIDTH_ATTRS:
                if getattr(module, attr, None) == group.width:
                    setattr(module, attr, heads * unit)
    return keep


def sync_attributes(module: nn.Module) -> None:
    """Sets a layer's size attributes from its (resized) parameters."""
    w = module._parameters.get("weight")
    if w is None:
        return
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = w.shape
    elif isinstance(module, nn.modules.conv._ConvNd):
        module.out_channels = w.shape[0]
        module.in_channels = w.shape[1] * module.groups
        if module.groups > 1:  # depthwise stays depthwise
            module.groups = module.in_channels = module.out_channels
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        module.num_features = w.shape[0]
    elif isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm"):
        if hasattr(module, "normalized_shape"):
            module.normalized_shape = tuple(w.shape)
    elif isinstance(module, nn.Embedding):
        module.num_embeddings, module.embedding_dim = w.shape


def hf_configs(model: nn.Module) -> List[Any]:
    """The distinct Hugging Face-style configs (objects with ``to_dict``) held by the model's modules."""
    seen: Dict[int, Any] = {}
    for module in model.modules():
        cfg = getattr(module, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict"):
            seen.setdefault(id(cfg), cfg)
    return list(seen.values())


# ------------------------------------------------------------------------------------------------ loading


def fit_to_state(model: nn.Module, state: Mapping[str, Any]) -> None:
    """Resizes ``model``'s plain layers (Linear, Conv, BatchNorm, LayerNorm, Embedding) to the shapes stored in
    ``state`` and shortens its ModuleLists / Sequentials to the blocks ``state`` holds, so that a pruned model's
    state loads into a fresh copy of the original architecture."""
    for name, module in list(model.named_modules()):
        if isinstance(module, (nn.ModuleList, nn.Sequential)):
            prefix = f"{name}." if name else ""
            heads = {k[len(prefix):].partition(".")[0] for k in state if k.startswith(prefix)}
            present = sorted(int(h) for h in heads if h.isdigit())
            n = len(present)
            if n and present == list(range(n)) and n < len(module) \
                    and all(len(module[i].state_dict()) for i in range(n, len(module))):
                del module[n:]  # blocks removed by drop_layers (the file holds the first n, renumbered)
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase,
                                   nn.LayerNorm, nn.Embedding)):
            continue
        for attr in list(module._parameters) + list(module._buffers):
            old = getattr(module, attr)
            new = state.get(prefix + attr)
            if old is None or not isinstance(new, Tensor) or tuple(new.shape) == tuple(old.shape) \
                    or new.dim() != old.dim():
                continue
            fresh = torch.empty(new.shape, dtype=old.dtype, device=old.device)
            if isinstance(old, nn.Parameter):
                module._parameters[attr] = nn.Parameter(fresh, requires_grad=old.requires_grad)
            else:
                module._buffers[attr] = fresh
        sync_attributes(module)
