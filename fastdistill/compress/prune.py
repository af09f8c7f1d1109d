"""Pruning a whole model: masks on the weights of Linear and Conv layers that stay applied while training.

Instead of torch.nn.utils.prune's reparametrization (``weight = weight_orig * weight_mask`` recomputed in every
forward, an extra weight-sized tensor per layer and per forward), the weights are zeroed in place once and a bool
``weight_mask`` buffer is kept on the module; a global optimizer step post-hook re-zeroes the pruned entries after
each ``optimizer.step()`` of an optimizer that owns the weight (one in-place masked fill per step, no per-forward
cost). ``remove_pruning`` drops the buffers; the zeros stay.

Masks are state, not process memory. The mask is the module's ``weight_mask`` buffer, so ``state_dict``,
``fastdistill.save`` and pickling carry it; the step hook finds the pruned modules through a registry that each
pruned module re-joins wherever it goes: a small marker object in the module's ``__dict__`` re-enrols the copy on
``copy.deepcopy`` and on unpickling (``torch.save(model)`` / ``torch.load``, multiprocessing, DDP spawn), and
:func:`restore_masks` (called by ``fastdistill.load``) gives a fresh, unpruned model the buffers a saved state holds,
so ``load_state_dict`` then restores the pruning. A DDP-wrapped model trains its own (registered) modules.

Internal API (for pruning schedules and callbacks): :func:`set_mask` (attach or replace a layer's mask, zero the
pruned weights, enrol the layer, install the hook once), :func:`clear_mask`, :func:`pruned_modules`; the hook
itself is :func:`_reapply_masks`.
"""
from __future__ import annotations

import fnmatch
import weakref
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch import nn

from .. import pruning

Filter = Optional[Sequence[Union[str, Type[nn.Module]]]]
PRUNABLE = (nn.Linear, nn.modules.conv._ConvNd)
MASK = "weight_mask"
_MARKER = "_fastdistill_pruned"

_PRUNED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()  # the step hook's index of the modules holding a mask
_HOOK = None


def _enrol(module: nn.Module) -> "_Enrolment":
    """Adds ``module`` to the registry the step hook reads (installing the hook once); returns its marker."""
    global _HOOK
    _PRUNED.add(module)
    if _HOOK is None:
        _HOOK = register_optimizer_step_post_hook(_reapply_masks)
    return _Enrolment(module)


class _Enrolment:
    """Lives in a pruned module's ``__dict__``, so it is copied and pickled with the module: the copy of the module
    is enrolled as well (``__deepcopy__`` finds it in deepcopy's memo; unpickling calls :func:`_enrol` on it)."""

    __slots__ = ("module",)

    def __init__(self, module: nn.Module) -> None:
        self.module = weakref.ref(module)

    def __deepcopy__(self, memo: Dict[int, Any]) -> Optional["_Enrolment"]:
        original = self.module()
        copied = memo.get(id(original)) if original is not None else None
        return _enrol(copied) if isinstance(copied, nn.Module) else None

    def __reduce__(self):
        return (_enrol, (self.module(),))


def set_mask(module: nn.Module, mask: torch.Tensor) -> None:
    """Makes ``mask`` (bool, the weight's shape, True = kept) the pruning mask of ``module``: stored as its
    ``weight_mask`` buffer (replacing any previous one), the pruned weights zeroed now, and re-zeroed after every
    ``optimizer.step()`` of an optimizer that owns ``module.weight``. The one way masks are attached (``prune``,
    ``restore_masks``, pruning schedules); calling it again with a new mask (a higher sparsity) updates it."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"module: expected a layer with a weight tensor, got {type(module).__name__}")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != weight.shape:
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask: expected a bool tensor of the weight's shape {tuple(weight.shape)}, got {got}")
    mask = mask.to(weight.device)
    with torch.no_grad():
        weight.masked_fill_(~mask, 0)
    if MASK in module._buffers:
        module._buffers[MASK] = mask
    else:
        module.register_buffer(MASK, mask)
    module.__dict__[_MARKER] = _enrol(module)


def clear_mask(module: nn.Module) -> bool:
    """Drops ``module``'s mask (the zeros stay) and stops re-applying it; returns whether it had one."""
    _PRUNED.discard(module)
    module.__dict__.pop(_MARKER, None)
    return module._buffers.pop(MASK, None) is not None


def pruned_modules() -> List[nn.Module]:
    """Every live module whose mask the step hook applies (in this process)."""
    return [m for m in list(_PRUNED) if MASK in m._buffers]


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
    """The global optimizer step post-hook: re-zeroes the pruned weights of every enrolled module whose weight
    ``optimizer`` owns (a module's current ``weight_mask`` buffer is read at each step, so a replaced or reloaded
    mask takes effect at once)."""
    owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
    with torch.no_grad():
        for module in list(_PRUNED):
            mask = module._buffers.get(MASK)
            weight = getattr(module, "weight", None)
            if mask is not None and weight is not None and id(weight) in owned:
                weight.masked_fill_(~mask, 0)


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
        (saved in ``state_dict``), which copies (``copy.deepcopy``), pickles, ``fastdistill.save``/``load`` and
        DDP-wrapped models keep enforcing (see the module docstring; a plain ``state_dict`` goes into a fresh
        model through :func:`restore_masks`). Pruning again (to a higher sparsity, say) recomputes masks from the
        current weights, where the already-pruned zeros go first.

    Example::

        >>> model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
        >>> masks = fastdistill.compress.prune(model, 0.8)
        >>> round(fastdistill.compress.sparsity(model)["total"], 2)
        0.8
    """
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
    for (name, module), mask in zip(layers, masks):
        set_mask(module, mask)
        out[name] = module._buffers[MASK]
    return out


def restore_masks(model: nn.Module, state_dict: Mapping[str, Any]) -> int:
    """Gives the layers of a fresh (unpruned) ``model`` the pruning masks that ``state_dict`` holds
    (``"<layer>.weight_mask"`` entries, as ``prune`` leaves in a model's state), so that
    ``model.load_state_dict(state_dict)`` restores the pruning and optimizer steps keep it. Layers that already
    hold a mask get the saved one. ``fastdistill.load`` does this itself. Returns how many layers got a mask.

    Example::

        >>> state = pruned_model.state_dict()
        >>> fresh = make_model()
        >>> fastdistill.compress.restore_masks(fresh, state)
        2
        >>> fresh.load_state_dict(state)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    count = 0
    for name, module in model.named_modules():
        key = f"{name}.{MASK}" if name else MASK
        mask = state_dict.get(key)
        if not isinstance(mask, torch.Tensor) or not isinstance(module, PRUNABLE):
            continue
        if mask.dtype != torch.bool or mask.shape != module.weight.shape:
            raise ValueError(f"state_dict: {key!r} is {mask.dtype} {tuple(mask.shape)}, expected bool of the "
                             f"layer's weight shape {tuple(module.weight.shape)}")
        set_mask(module, mask.detach().clone())
        count += 1
    return count


def remove_pruning(model: nn.Module) -> int:
    """Makes pruning permanent: drops the ``weight_mask`` buffers (the zeros stay) and stops re-applying them.
    Returns how many modules were unpruned.

    Example::

        >>> fastdistill.compress.remove_pruning(model)
        2
    """
    count = 0
    for module in model.modules():
        if MASK in module._buffers:
            with torch.no_grad():
                module.weight.masked_fill_(~module._buffers[MASK], 0)
            count += clear_mask(module)
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
