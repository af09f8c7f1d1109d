"""Turning pruned ``nn.Linear`` layers into :class:`fastdistill.nn.SparseLinear` where that is faster.

CSR only pays at high sparsity: per stored value it reads 6 bytes (fp32 value + 16-bit column) where dense reads
4 bytes per element, and a dense GEMM at large batch runs near peak FLOPs while the sparse product is bound by
cache bandwidth. Measured on 4096x4096 layers (one thread, AVX-512): at 0.9 sparsity the sparse kernel is 3-5x
faster than dense at batch 1 to 256; at 0.5 it is no faster. So ``sparsify`` decides per layer:

* skip layers with fewer than ``min_sparsity`` zeros, or that are not plain ``nn.Linear`` (e.g. attention
  projections whose weight their parent reads directly);
* ``measure=True`` (default, CPU layers): time dense ``F.linear`` and the sparse kernel on the layer's shape at
  ``batch_size`` (interleaved, best of a few runs) and replace only when sparse takes at most ``margin`` (0.8) of
  the dense time, so timing noise cannot make the model slower;
* ``measure=False`` or a non-CPU layer: the model above, replace when sparsity >= 0.75.
"""
from __future__ import annotations

from typing import Dict, Union

import torch
import torch.nn.functional as F
from torch import nn

from .._timing import median_ms
from ..nn import SparseLinear
from ..sparse import SparseWeight, sparse_linear

MODELLED_MIN_SPARSITY = 0.75


def _timed_faster(layer: nn.Linear, sw: SparseWeight, batch_size: int, margin: float) -> Dict[str, float]:
    x = torch.randn(batch_size, layer.in_features, dtype=torch.float32)
    w = layer.weight.detach().float()
    b = None if layer.bias is None else layer.bias.detach().float()
    dense = lambda: F.linear(x, w, b)  # noqa: E731
    sparse = lambda: sparse_linear(x, sw, b)  # noqa: E731
    dense_ms, sparse_ms = float("inf"), float("inf")
    with torch.no_grad():
        for _ in range(3):  # interleaved rounds: drift and other load hit both alike
            dense_ms = min(dense_ms, median_ms(dense, repeat=3, warmup=1))
            sparse_ms = min(sparse_ms, median_ms(sparse, repeat=3, warmup=1))
    return {"dense_ms": dense_ms, "sparse_ms": sparse_ms, "replace": float(sparse_ms <= margin * dense_ms)}


def sparsify(
    model: nn.Module,
    *,
    min_sparsity: float = 0.5,
    batch_size: int = 1,
    measure: bool = True,
    margin: float = 0.8,
) -> Dict[str, Dict[str, Union[float, bool, str]]]:
    """Replaces, in place, the pruned ``nn.Linear`` layers of ``model`` by ``SparseLinear`` where the sparse kernel
    is faster at ``batch_size`` rows per call (see the module docstring for how that is decided). The model's
    outputs are unchanged up to float summation order.

    Returns ``{layer name: {"sparsity", "replaced", "reason", and "dense_ms"/"sparse_ms" when timed}}`` for every
    ``nn.Linear`` considered.

    Example::

        >>> model = nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
        >>> fastdistill.compress.prune(model, 0.95, include=["0"])
        >>> report = fastdistill.compress.sparsify(model)
        >>> type(model[0]).__name__ if report["0"]["replaced"] else "Linear"  # doctest: +SKIP
        'SparseLinear'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if type(model) is nn.Linear:
        raise ValueError("model: a bare nn.Linear cannot be replaced in place; use SparseLinear.from_dense(layer)")
    if not 0.0 <= float(min_sparsity) <= 1.0:
        raise ValueError(f"min_sparsity: expected a fraction in [0, 1], got {min_sparsity}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    if not 0.0 < float(margin) <= 1.0:
        raise ValueError(f"margin: expected 0 < margin <= 1, got {margin}")
    report: Dict[str, Dict[str, Union[float, bool, str]]] = {}
    for name, module in list(model.named_modules()):
        if type(module) is not nn.Linear:  # subclasses (attention out_proj, quantized stubs) keep their weight
            continue
        w = module.weight.detach()
        sp = float((w == 0).sum()) / max(w.numel(), 1)
        entry: Dict[str, Union[float, bool, str]] = {"sparsity": sp, "replaced": False}
        report[name] = entry
        if sp < min_sparsity or w.numel() == 0:
            entry["reason"] = f"sparsity {sp:.3f} < min_sparsity {min_sparsity}"
            continue
        if w.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            entry["reason"] = f"weight dtype {w.dtype} is not supported"
            continue
        sw = SparseWeight.from_dense(w)
        if measure and w.device.type == "cpu":
            timing = _timed_faster(module, sw, batch_size, margin)
            entry.update(dense_ms=timing["dense_ms"], sparse_ms=timing["sparse_ms"])
            faster = bool(timing["replace"])
            entry["reason"] = (f"measured sparse {timing['sparse_ms']:.3g} ms vs dense {timing['dense_ms']:.3g} ms "
                               f"(replace at <= {margin} x dense)")
        else:
            faster = sp >= MODELLED_MIN_SPARSITY
            entry["reason"] = f"modelled: replace at sparsity >= {MODELLED_MIN_SPARSITY}"
        if faster:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, SparseLinear(sw, module.bias))
            entry["replaced"] = True
    return report
