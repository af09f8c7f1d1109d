"""A student made of some of the teacher's own blocks (DistilBERT's initialisation: every other layer)."""
from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Tuple

from torch import nn


def _block_lists(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(path, container) of every ModuleList whose children all have one type, longest first."""
    found = []
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) > 0 and len({type(c) for c in m}) == 1:
            found.append((name, m))
    return sorted(found, key=lambda item: -len(item[1]))


def _find_blocks(model: nn.Module, blocks: Optional[str]) -> Tuple[str, nn.Module]:
    if blocks is not None:
        try:
            container = model.get_submodule(blocks)
        except AttributeError:
            raise ValueError(f"blocks: the model has no module {blocks!r}") from None
        if not isinstance(container, (nn.ModuleList, nn.Sequential)):
            raise ValueError(f"blocks: {blocks!r} is a {type(container).__name__}, expected a ModuleList or "
                             "Sequential of blocks")
        return blocks, container
    if isinstance(model, nn.Sequential):
        return "", model
    lists = _block_lists(model)
    if not lists:
        raise ValueError(f"teacher: found no ModuleList of blocks in this {type(model).__name__} (give blocks=, "
                         "the path of the list of layers)")
    return lists[0]


def shrink(teacher: nn.Module, keep: Sequence[int], *, blocks: Optional[str] = None) -> nn.Module:
    """A copy of ``teacher`` that keeps only the blocks ``keep`` (indices into its list of blocks, increasing),
    with the teacher's weights: e.g. ``shrink(bert, [0, 2, 4])`` keeps every other encoder layer of a 6-layer
    BERT, as DistilBERT initialises its student.

    The blocks are, unless ``blocks`` names the container: the children of an ``nn.Sequential`` teacher, or else
    the longest ``nn.ModuleList`` whose children are all of one type (``encoder.layer`` of a Hugging Face BERT,
    ``model.layers`` of a decoder). A Hugging Face ``config.num_hidden_layers`` is updated, and so are
    ``layer_idx`` attributes inside the kept blocks (decoders index their KV cache with them). The teacher is not
    modified.

    Example::

        >>> teacher = nn.Sequential(*[nn.Sequential(nn.Linear(32, 32), nn.ReLU()) for _ in range(6)])
        >>> student = shrink(teacher, [0, 2, 4])
        >>> len(student)
        3
    """
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher: expected an nn.Module, got {type(teacher).__name__}")
    keep = list(keep)
    if not keep or any(isinstance(i, bool) or not isinstance(i, int) for i in keep):
        raise ValueError(f"keep: expected a non-empty sequence of block indices (int), got {keep!r}")
    path, container = _find_blocks(teacher, blocks)
    n = len(container)
    if any(not 0 <= i < n for i in keep) or any(a >= b for a, b in zip(keep, keep[1:])):
        raise ValueError(f"keep: expected increasing indices in [0, {n}) of the {n} blocks at "
                         f"{path or 'the top level'!r}, got {keep}")
    student = copy.deepcopy(teacher)
    old = student.get_submodule(path) if path else student
    kept = [old[i] for i in keep]
    for new_index, block in enumerate(kept):
        for m in block.modules():
            if isinstance(getattr(m, "layer_idx", None), int):
                m.layer_idx = new_index
    if not path:
        return nn.Sequential(*kept) if type(student) is nn.Sequential else _replace_children(student, kept)
    parent_path, _, attr = path.rpartition(".")
    parent = student.get_submodule(parent_path) if parent_path else student
    setattr(parent, attr, nn.ModuleList(kept) if isinstance(old, nn.ModuleList) else nn.Sequential(*kept))
    config = getattr(student, "config", None)
    if config is not None and hasattr(config, "num_hidden_layers"):
        config.num_hidden_layers = len(kept)
    return student


def _replace_children(seq: nn.Sequential, kept: List[nn.Module]) -> nn.Sequential:
    """A Sequential subclass keeps its class: its children are replaced in place."""
    for key in list(seq._modules):
        del seq._modules[key]
    for i, m in enumerate(kept):
        seq.add_module(str(i), m)
    return seq
