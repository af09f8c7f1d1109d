"""Quantizing a whole model: every selected ``nn.Linear`` becomes a :class:`fastdistill.nn.Int8Linear` (8 bits) or
:class:`fastdistill.nn.Int4Linear` (4 bits, group scales); convolutions and embedding tables named by ``include``
become :class:`fastdistill.nn.Int8Conv2d` and :class:`fastdistill.nn.QuantizedEmbedding`."""
from __future__ import annotations

import copy
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..nn.conv import Int8Conv2d
from ..nn.embedding import QuantizedEmbedding
from ..nn.int4 import Int4Linear, group_size_for
from ..nn.int8 import Int8Linear
from .gptq import gptq_quantize, input_hessians
from .prune import Filter, _check_filter, _matches
from .structure import LossFn, batches_of, call_model, first_tensor, per_batch_gradients, run_hooked

# In eval mode these layers may run one fused kernel on their children's ``.weight`` (fp32, bypassing Int8Linear);
# they skip that fast path when a child has a forward hook.
_FUSED_LAYERS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
BITS = (8, 4)
ROUNDINGS = ("nearest", "gptq")
_QUANTIZABLE = (nn.Linear, nn.Conv2d, nn.Embedding)


def _keep_off_fast_path(module: nn.Module, args: Any) -> None:
    return None


def _calibrate(model: nn.Module, layers: Dict[str, nn.Linear], batches: Iterable[Any]) -> Dict[str, torch.Tensor]:
    """Per-input-channel max |activation| seen by each layer over the calibration batches."""
    amax: Dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, args):
            a = args[0].detach().reshape(-1, module.in_features).abs().amax(0).float()
            amax[name] = torch.maximum(amax[name], a) if name in amax else a
        return record

    run_hooked(model, batches, [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()])
    return amax


def _fisher(model: nn.Module, layers: Dict[str, nn.Linear], batches: Iterable[Any],
            loss_fn: Optional[LossFn], targets: Optional[Sequence[Any]]) -> Dict[str, torch.Tensor]:
    """{layer name: squared gradients of its weight summed over the calibration batches}: the diagonal Fisher
    information of ``loss_fn(output, target)``, or, without it, of the model's output itself (the loss
    ``sum(output * r)`` with a fresh standard normal ``r`` per batch, whose squared gradient is in expectation the
    Gauss-Newton diagonal diag(J^T J): how much each weight moves the output)."""
    params = {name: layer.weight for name, layer in layers.items()}
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    gen = torch.Generator().manual_seed(0)

    def loss_of(batch: Any, target: Any) -> torch.Tensor:
        out = call_model(model, batch)
        if loss_fn is not None:
            return loss_fn(out, target)
        y = first_tensor(out)
        if y is None:
            raise ValueError("loss_fn: the model's output holds no tensor to weigh; pass loss_fn")
        return (y * torch.randn(y.shape, generator=gen).to(y)).sum()

    for _ in per_batch_gradients(params, list(batches), targets, loss_of):
        for name, p in params.items():
            if p.grad is not None:
                fisher[name] += p.grad.detach().float() ** 2
    return fisher


def _selected(model: nn.Module, include: Filter, exclude: Filter) -> List[Tuple[str, nn.Module]]:
    """The layers to quantize: every plain ``nn.Linear`` by default; with ``include``, the Linear, Conv2d and
    Embedding layers it names (by glob pattern or class)."""
    inc, exc = _check_filter(include, "include"), _check_filter(exclude, "exclude")
    skip = nn.modules.linear.NonDynamicallyQuantizableLinear  # attention's out_proj: its parent reads .weight
    out = []
    for name, module in model.named_modules():
        if not name or not isinstance(module, _QUANTIZABLE) or isinstance(module, skip):
            continue
        if inc:
            if not _matches(name, module, inc):
                continue
        elif not isinstance(module, nn.Linear):
            continue
        if exc and _matches(name, module, exc):
            continue
        out.append((name, module))
    return out


def quantize(model: nn.Module, bits: int = 8, *, include: Filter = None, exclude: Filter = None,
             inplace: bool = False, granularity: str = "channel", group_size: int = 128,
             calibration: Optional[Iterable[Any]] = None, outlier_ratio: float = 6.0,
             scale_method: str = "absmax", rounding: str = "nearest",
             loss_fn: Optional[LossFn] = None, targets: Optional[Sequence[Any]] = None) -> nn.Module:
    """Replaces the layers selected by ``include`` / ``exclude`` (glob patterns of qualified module names or module
    classes, as in :func:`fastdistill.compress.prune`; by default every ``nn.Linear``) by quantized layers; returns
    the model (a deep copy unless ``inplace``).

    * ``nn.Linear`` -> :class:`~fastdistill.nn.Int8Linear` (``bits=8``: int8 weights per output channel, or per
      tensor with ``granularity="tensor"``) or :class:`~fastdistill.nn.Int4Linear` (``bits=4``: int4 weights with
      one scale per ``group_size`` input channels);
    * ``nn.Conv2d`` (when included) -> :class:`~fastdistill.nn.Int8Conv2d` (8 bits);
    * ``nn.Embedding`` (when included) -> :class:`~fastdistill.nn.QuantizedEmbedding` (``bits``, ``group_size``).

    ``scale_method``: how each weight row (group) picks its clip range, as in :func:`fastdistill.quantize`
    (``"absmax"``, ``"mse"``, ...); ``"fisher"`` (needs ``calibration``) weighs each weight's error by its
    squared gradient over the calibration batches: of ``loss_fn(output, target)`` when given (``targets``: one
    per calibration batch, e.g. its labels, or None), else of the output
    itself (random projections: how much each weight moves the output); convolutions and embeddings then use
    ``"mse"``. ``calibration``: optional batches (a tensor, a tuple of positional arguments, or
    a dict of keyword arguments, per batch) run through the model first; for 8 bits, input channels of a layer
    whose max |activation| exceeds ``outlier_ratio`` times the median channel's are then computed in fp32 beside
    the int8 product (see :mod:`fastdistill.nn.int8`). ``rounding="gptq"`` (4 bits, needs ``calibration``) rounds
    the Linear weights with GPTQ (see :mod:`fastdistill.compress.gptq`): all-MiniLM-L6-v2 at 4 bits, groups of 128,
    held-out embedding cosine 0.94 -> 0.98. Attention blocks that read their projections' weights directly
    (``nn.MultiheadAttention``) keep them in fp32.

    Example::

        >>> model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
        >>> q = fastdistill.compress.quantize(model)
        >>> type(q[0]).__name__
        'Int8Linear'
        >>> type(fastdistill.compress.quantize(model, bits=4, group_size=32)[0]).__name__
        'Int4Linear'
    """
    if isinstance(bits, bool) or bits not in BITS:
        raise ValueError(f"bits: expected one of {BITS}, got {bits!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(outlier_ratio, (int, float)) or not outlier_ratio > 1:
        raise ValueError(f"outlier_ratio: expected a number > 1, got {outlier_ratio!r}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding: expected one of {ROUNDINGS}, got {rounding!r}")
    if rounding == "gptq" and (bits != 4 or calibration is None or scale_method == "fisher"):
        raise ValueError("rounding: 'gptq' is for bits=4 (8-bit rounding error is already small), needs "
                         "calibration batches, and picks group scales from the updated weights (not 'fisher')")
    if scale_method == "fisher" and calibration is None:
        raise ValueError("calibration: scale_method='fisher' needs calibration batches for the gradients")
    if not inplace:
        model = copy.deepcopy(model)
    selected = _selected(model, include, exclude)
    for name, module in selected:
        if isinstance(module, nn.Conv2d) and bits != 8:
            raise ValueError(f"bits: convolutions are quantized to 8 bits (layer {name!r}), got {bits}")
    linears = {n: m for n, m in selected if isinstance(m, nn.Linear)}
    amax = _calibrate(model, linears, batches_of(calibration)) if calibration is not None and bits == 8 else {}
    hessians = input_hessians(model, linears, batches_of(calibration)) if rounding == "gptq" else {}
    fisher = _fisher(model, linears, batches_of(calibration), loss_fn, targets) if scale_method == "fisher" else {}
    other_method = "mse" if scale_method == "fisher" else scale_method
    for name, module in selected:
        if isinstance(module, nn.Linear) and bits == 8:
            outliers = None
            if name in amax:
                a = amax[name]
                outliers = (a > outlier_ratio * a.median()).nonzero().flatten()
            q = Int8Linear.from_float(module, granularity=granularity, outlier_channels=outliers,
                                      scale_method=scale_method, fisher=fisher.get(name))
        elif isinstance(module, nn.Linear) and name in hessians:
            g = group_size_for(module.in_features, group_size)
            q = Int4Linear.from_quantized(gptq_quantize(module.weight, hessians.pop(name), 4, g,
                                                        scale_method=scale_method), module.bias)
        elif isinstance(module, nn.Linear):
            q = Int4Linear.from_float(module, group_size=group_size, scale_method=scale_method,
                                      fisher=fisher.get(name))
        elif isinstance(module, nn.Conv2d):
            q = Int8Conv2d.from_float(module, scale_method=other_method)
        else:
            q = QuantizedEmbedding.from_float(module, bits=bits, group_size=group_size, scale_method=other_method)
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(parent, _FUSED_LAYERS):
            q.register_forward_pre_hook(_keep_off_fast_path)
        setattr(parent, attr, q)
    return model
