"""Quantizing a whole model: every selected ``nn.Linear`` becomes a :class:`fastdistill.nn.Int8Linear`."""
from __future__ import annotations

import copy
from typing import Any, Dict, Iterable, Optional

import torch
from torch import nn

from ..nn.int8 import Int8Linear
from .prune import Filter, prunable_layers


# In eval mode these layers may run one fused kernel on their children's ``.weight`` (fp32, bypassing Int8Linear);
# they skip that fast path when a child has a forward hook.
_FUSED_LAYERS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


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

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                model(*batch) if isinstance(batch, (tuple, list)) else model(batch)
    finally:
        for h in handles:
            h.remove()
    return amax


def quantize(model: nn.Module, bits: int = 8, *, include: Filter = None, exclude: Filter = None,
             inplace: bool = False, granularity: str = "channel", calibration: Optional[Iterable[Any]] = None,
             outlier_ratio: float = 6.0) -> nn.Module:
    """Replaces every ``nn.Linear`` selected by ``include`` / ``exclude`` (glob patterns of qualified module names or
    module classes, as in :func:`fastdistill.compress.prune`) by an :class:`~fastdistill.nn.Int8Linear`; returns the
    model (a deep copy unless ``inplace``).

    ``calibration``: optional batches (a tensor, or a tuple of positional arguments, per batch) run through the model
    first; input channels of a layer whose max |activation| exceeds ``outlier_ratio`` times the median channel's are
    then computed in fp32 beside the int8 product (see :mod:`fastdistill.nn.int8`). Attention blocks that read their
    projections' weights directly (``nn.MultiheadAttention``) keep them in fp32.

    Example::

        >>> model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
        >>> q = fastdistill.compress.quantize(model)
        >>> type(q[0]).__name__
        'Int8Linear'
    """
    if isinstance(bits, bool) or bits != 8:
        raise ValueError(f"bits: only 8 is supported, got {bits!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(outlier_ratio, (int, float)) or not outlier_ratio > 1:
        raise ValueError(f"outlier_ratio: expected a number > 1, got {outlier_ratio!r}")
    if not inplace:
        model = copy.deepcopy(model)
    skip = nn.modules.linear.NonDynamicallyQuantizableLinear
    layers = {n: m for n, m in prunable_layers(model, include, exclude)
              if isinstance(m, nn.Linear) and not isinstance(m, skip) and n}
    amax = _calibrate(model, layers, calibration) if calibration is not None else {}
    for name, linear in layers.items():
        outliers = None
        if name in amax:
            a = amax[name]
            outliers = (a > outlier_ratio * a.median()).nonzero().flatten()
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        q = Int8Linear.from_float(linear, granularity=granularity, outlier_channels=outliers)
        if isinstance(parent, _FUSED_LAYERS):
            q.register_forward_pre_hook(_keep_off_fast_path)
        setattr(parent, attr, q)
    return model
