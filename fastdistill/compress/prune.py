"""Pruning a whole model: masks on the weights of Linear and Conv layers that stay applied while training.

Instead of torch.nn.utils.prune's reparametrization (``weight = weight_orig * weight_mask`` recomputed in every
forward, an extra weight-sized tensor per layer and per forward), the weights are zeroed in place once and a bool
``weight_mask`` buffer is kept on the module; a global optimizer step post-hook re-zeroes the pruned entries after
each ``optimizer.step()`` of an optimizer that owns the weight (one in-place masked fill per step, no per-forward
cost). ``remove_pruning`` drops the buffers; the zeros stay.
"""
from __future__ import annotations

import fnmatch
import weakref
from typing import Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch import nn

from .. import pruning

Filter = Optional[Sequence[Union[str, Type[nn.Module]]]]
PRUNABLE = (nn.Linear, nn.modules.conv._ConvNd)
MASK = "weight_mask"

_PRUNED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()
_HOOK = None


def _matches(name: str, module: nn.Module, patterns: Sequence[Union[str, Type[nn.Module]]]) -> bool:
    for p in patterns:
        if isinstance(p, str) and fnmatch.fnmatchcase(name, p):
            return True
        if isinstance(p, type) and isinstance(module, p):
            return True
    return False


def _check_filter(value: Filter, name: str) -> Sequence[Union[str, Type[nn.Module]]]:
    if value is None:
        return ()
    if isinstance(value, (str, type)):
        value = [value]
    for p in value:
        if not isinstance(p, (str, type)):
            raise TypeError(f"{name}: expected glob patterns of module names or nn.Module classes, got {p!r}")
    return list(value)


def prunable_layers(model: nn.Module, include: Filter = None, exclude: Filter = None) -> List[Tuple[str, nn.Module]]:
    """(qualified name, module) of the Linear/Conv layers selected by ``include`` / ``exclude``."""
    inc, exc = _check_filter(include, "include"), _check_filter(exclude, "exclude")
    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, PRUNABLE) or not isinstance(getattr(module, "weight", None), torch.Tensor):
            continue
        if inc and not _matches(name, module, inc):
            continue
        if exc and _matches(name, module, exc):
            continue
        layers.append((name, module))
    return layers


def _reapply_masks(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
    with torch.no_grad():
        for module in list(_PRUNED):
            mask = getattr(module, MASK, None)
            if mask is not None and id(module.weight) in owned:
                module.weight.masked_fill_(~mask, 0)


def prune(
    model: nn.Module,
    sparsity: Union[float, int],
    *,
    scope: str = "global",
    method: str = "magnitude",
    include: Filter = None,
    exclude: Filter = None,
    generator: Optional[torch.Generator] = None,
    calibration: Optional[Sequence] = None,
) -> Dict[str, torch.Tensor]:
    """Prunes the weights of the model's Linear and Conv layers in place and keeps them pruned while training.

    Args:
        model: any ``nn.Module``; every ``nn.Linear`` / ``nn.Conv{1,2,3}d`` (and transposed conv) weight is a
            candidate. Biases are not pruned.
        sparsity: fraction in [0, 1] (or int count) of the candidate weights to prune, over all selected layers
            together (``scope="global"``) or in each layer (``scope="layer"``).
        method: ``"magnitude"`` (smallest |w|; the masks equal ``torch.nn.utils.prune.global_unstructured`` /
            ``l1_unstructured`` on tie-free weights), ``"random"``, or ``"wanda"`` (smallest |w| x L2 norm of the
            weight's input feature over ``calibration``, compared within each output row whatever ``scope`` says,
            as Wanda does; see :func:`fastdistill.wanda_mask`).
        include / exclude: glob patterns of qualified module names (``"encoder.*"``) or ``nn.Module`` classes.
        generator: random source for ``method="random"``.
        calibration: batches (tensors, argument tuples or keyword dicts) for ``method="wanda"``.

    Returns:
        ``{module name: keep-mask}``. Each pruned module also holds the mask as its ``weight_mask`` buffer
        (saved in ``state_dict``). Pruning again (to a higher sparsity, say) recomputes masks from the current
        weights, where the already-pruned zeros go first.

    Example::

        >>> model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
        >>> masks = fastdistill.compress.prune(model, 0.8)
        >>> round(fastdistill.compress.sparsity(model)["total"], 2)
        0.8
    """
    global _HOOK
    if scope not in ("global", "layer"):
        raise ValueError(f"scope: expected 'global' or 'layer', got {scope!r}")
    if method not in ("magnitude", "random", "wanda"):
        raise ValueError(f"method: expected 'magnitude', 'random' or 'wanda', got {method!r}")
    if method == "wanda" and calibration is None:
        raise ValueError("calibration: method='wanda' needs calibration batches to measure the input norms")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    layers = prunable_layers(model, include, exclude)
    if not layers:
        raise ValueError("model: no Linear/Conv layer matches include/exclude, nothing to prune")
    weights = [m.weight.detach() for _, m in layers]
    if method == "wanda":
        from .wanda import wanda_masks
        masks = wanda_masks(model, layers, sparsity, calibration)
    elif method == "magnitude":
        if scope == "global":
            masks = pruning.global_magnitude_masks(weights, sparsity)
        else:
            masks = [pruning.magnitude_mask(w, sparsity) for w in weights]
    else:
        if scope == "global":
            flat = pruning.random_mask(torch.empty(sum(w.numel() for w in weights)), sparsity, generator)
            masks = [m.reshape(w.shape).to(w.device) for m, w in zip(torch.split(flat, [w.numel() for w in weights]),
                                                                      weights)]
        else:
            masks = [pruning.random_mask(w, sparsity, generator) for w in weights]
    out: Dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for (name, module), mask in zip(layers, masks):
            module.weight.masked_fill_(~mask, 0)
            if MASK in module._buffers:
                module._buffers[MASK] = mask
            else:
                module.register_buffer(MASK, mask)
            _PRUNED.add(module)
            out[name] = mask
    if _HOOK is None:
        _HOOK = register_optimizer_step_post_hook(_reapply_masks)
    return out


def remove_pruning(model: nn.Module) -> int:
    """Makes pruning permanent: drops the ``weight_mask`` buffers (the zeros stay) and stops re-applying them.
    Returns how many modules were unpruned.

    Example::

        >>> fastdistill.compress.remove_pruning(model)
        2
    """
    count = 0
    for module in model.modules():
        if MASK in getattr(module, "_buffers", {}):
            with torch.no_grad():
                module.weight.masked_fill_(~module._buffers[MASK], 0)
            del module._buffers[MASK]
            _PRUNED.discard(module)
            count += 1
    return count


def sparsity(model: nn.Module, include: Filter = None, exclude: Filter = None) -> Dict[str, float]:
    """Fraction of exact zeros in each Linear/Conv weight, and over all of them (``"total"``).

    Example::

        >>> fastdistill.compress.sparsity(nn.Linear(4, 4))["total"]
        0.0
    """
    out: Dict[str, float] = {}
    zeros = total = 0
    for name, module in prunable_layers(model, include, exclude):
        z = int((module.weight == 0).sum())
        out[name] = z / max(module.weight.numel(), 1)
        zeros += z
        total += module.weight.numel()
    out["total"] = zeros / max(total, 1)
    return out
