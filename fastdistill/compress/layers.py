"""Depth pruning: removing whole residual blocks (transformer layers, ResNet blocks) from a model.

The candidates are the composite blocks stacked in an ``nn.ModuleList`` / ``nn.Sequential`` that map their input to
an output of the same shape (a Hugging Face encoder's ``encoder.layer[i]``, a ResNet stage's blocks): without one,
the stack passes the hidden state on to the next block unchanged. A block whose output is closest to its input
matters least (the "block influence" of ShortGPT, Men et al. 2024; layer dropping as in Sajjad et al. 2023):

* ``criterion="cosine"``: importance = 1 - mean cosine similarity between a block's input and output hidden states
  (per token for (batch, tokens, features) states, over the channels for (N, C, H, W) feature maps);
* ``criterion="l1"``: importance = mean |output - input| / mean |input|.
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch.nn.functional as F
from torch import nn

from .structure import batches_of, first_tensor, hf_configs, run_hooked

CRITERIA = ("cosine", "l1")


def _candidates(model: nn.Module) -> List[Tuple[str, nn.Module, int]]:
    """(container name, container, index) of every composite block in a ModuleList / Sequential."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.ModuleList, nn.Sequential)):
            for i, child in enumerate(module):
                if any(True for _ in child.children()) and any(True for _ in child.parameters()):
                    out.append((name, module, i))
    return out


def _importance(model: nn.Module, blocks: List[Tuple[str, nn.Module, int]], batches: List[Any],
                criterion: str) -> Dict[str, float]:
    sums: Dict[str, float] = {}
    counts: Dict[str, int] = {}
    same_shape: Dict[str, bool] = {}
    hooks = []
    for cname, container, i in blocks:
        key = f"{cname}.{i}" if cname else str(i)

        def hook(mod, args, kwargs, output, key=key):
            x = first_tensor(args) if args else first_tensor(list(kwargs.values()))
            y = first_tensor(output)
            if x is None or y is None or x.shape != y.shape or not x.is_floating_point():
                same_shape[key] = False
                return
            same_shape.setdefault(key, True)
            x, y = x.detach().float(), y.detach().float()
            if criterion == "cosine":
                dim = 1 if x.dim() == 4 else -1
                score = 1.0 - float(F.cosine_similarity(x, y, dim=dim, eps=1e-8).mean())
            else:
                score = float((y - x).abs().mean() / x.abs().mean().clamp_min(1e-12))
            sums[key] = sums.get(key, 0.0) + score
            counts[key] = counts.get(key, 0) + 1

        hooks.append(container[i].register_forward_hook(hook, with_kwargs=True))
    run_hooked(model, batches, hooks)
    return {k: sums[k] / counts[k] for k in sums if same_shape.get(k)}


def _renumber(container: nn.Module, old_to_new: Dict[int, int]) -> None:
    """Hugging Face layers keep their position (``layer_idx``, for caches): give the kept blocks their new one."""
    for old, new in old_to_new.items():
        for module in container[new].modules():
            if isinstance(getattr(module, "layer_idx", None), int) and module.layer_idx == old:
                module.layer_idx = new


def drop_layers(
    model: nn.Module,
    n_or_fraction: Union[int, float],
    *,
    criterion: str = "cosine",
    example_inputs: Any,
    include: Optional[Sequence[str]] = None,
) -> List[str]:
    """Removes the ``n_or_fraction`` least important residual blocks (a count, or a fraction of the candidates) from
    the model in place, and returns their names (as they were before the removal, in order).

    The importance of each block is measured on ``example_inputs`` (a batch or an iterable of batches: tensors,
    argument tuples or keyword dicts) by ``criterion`` (see the module docstring). ``include``: names of the
    containers (``nn.ModuleList`` / ``nn.Sequential``) to drop from (default: every container of same-shape
    blocks). The remaining blocks are renumbered; a Hugging Face config's ``num_hidden_layers`` (and the layers'
    ``layer_idx``) follow, so ``save_pretrained`` / ``from_pretrained`` and :func:`fastdistill.load` into the
    original architecture both work.

    Example::

        >>> removed = fastdistill.compress.drop_layers(bert, 2, example_inputs=batch)  # doctest: +SKIP
        >>> removed, len(bert.encoder.layer)  # doctest: +SKIP
        (['encoder.layer.3', 'encoder.layer.4'], 4)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: expected one of {CRITERIA}, got {criterion!r}")
    if isinstance(n_or_fraction, bool) or not isinstance(n_or_fraction, numbers.Real):
        raise TypeError(f"n_or_fraction: expected an int count or a float fraction, got {type(n_or_fraction).__name__}")
    if example_inputs is None:
        raise ValueError("example_inputs: required (the blocks' importance is measured on them)")
    blocks = _candidates(model)
    if include is not None:
        wanted = [include] if isinstance(include, str) else list(include)
        names = {c for c, _, _ in blocks}
        for w in wanted:
            if w not in names:
                raise ValueError(f"include: {w!r} is not a ModuleList/Sequential of blocks (those: {sorted(names)})")
        blocks = [b for b in blocks if b[0] in wanted]
    scores = _importance(model, blocks, batches_of(example_inputs), criterion)
    blocks = [b for b in blocks if (f"{b[0]}.{b[2]}" if b[0] else str(b[2])) in scores]
    if not blocks:
        raise ValueError("model: no block of a ModuleList/Sequential maps its input to an output of the same shape "
                         "on example_inputs; nothing to drop")
    if isinstance(n_or_fraction, numbers.Integral):
        n = int(n_or_fraction)
        if not 0 <= n <= len(blocks):
            raise ValueError(f"n_or_fraction: an int count must be in [0, {len(blocks)}] (candidate blocks), got {n}")
    else:
        if not 0.0 <= float(n_or_fraction) <= 1.0:
            raise ValueError(f"n_or_fraction: a float fraction must be in [0, 1], got {n_or_fraction}")
        n = round(float(n_or_fraction) * len(blocks))
    keys = [f"{c}.{i}" if c else str(i) for c, _, i in blocks]
    order = sorted(range(len(blocks)), key=lambda j: (scores[keys[j]], j))[:n]
    removed = sorted(order)
    by_container: Dict[int, Tuple[str, nn.Module, List[int]]] = {}
    for j in removed:
        cname, container, i = blocks[j]
        by_container.setdefault(id(container), (cname, container, []))[2].append(i)
    configs = hf_configs(model)
    for cname, container, gone in by_container.values():
        old_len = len(container)
        kept = [i for i in range(old_len) if i not in gone]
        modules = [container[i] for i in kept]
        container._modules.clear()
        for new, m in enumerate(modules):
            container._modules[str(new)] = m
        _renumber(container, {old: new for new, old in enumerate(kept)})
        for cfg in configs:
            if getattr(cfg, "num_hidden_layers", None) == old_len:
                cfg.num_hidden_layers = len(kept)
    return [keys[j] for j in removed]
