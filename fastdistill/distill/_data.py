"""Loaders the Distiller derives from the user's: with another sampler (a rank's share), or yielding the dataset
indices of each batch (for a TeacherCache)."""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset


class Indexed(Dataset):
    """``dataset[i]`` as ``(i, dataset[i])``."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Tuple[int, Any]:
        return i, self.dataset[i]


class IndexedCollate:
    """Collates ``(i, sample)`` items into ``(indices, batch)`` with the loader's own collate function."""

    def __init__(self, collate: Any):
        self.collate = collate

    def __call__(self, items: List[Tuple[int, Any]]) -> Tuple[Tensor, Any]:
        return torch.tensor([i for i, _ in items], dtype=torch.int64), self.collate([x for _, x in items])


def rebuild_loader(loader: DataLoader, *, sampler: Any = None, indexed: bool = False) -> DataLoader:
    """The same loader (batch size, collate function, workers, generator) with ``sampler`` in place of its own
    (if given), and, if ``indexed``, yielding ``(dataset indices, batch)``."""
    if loader.batch_size is None:
        raise ValueError("loader: expected a DataLoader with a batch_size (not a batch_sampler of its own)")
    dataset, collate = loader.dataset, loader.collate_fn
    if indexed:
        if isinstance(dataset, IterableDataset):
            raise TypeError("loader: an IterableDataset has no sample indices; a TeacherCache needs a map-style "
                            "dataset")
        dataset, collate = Indexed(dataset), IndexedCollate(collate)
    return DataLoader(dataset, batch_size=loader.batch_size, sampler=sampler if sampler is not None else loader.sampler,
                      collate_fn=collate, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      drop_last=loader.drop_last, timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                      generator=loader.generator, persistent_workers=loader.persistent_workers)


def generators(loader: Any) -> List[torch.Generator]:
    """The random generators a loader's order depends on (its own, its sampler's), each once."""
    out: List[torch.Generator] = []
    for g in (getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)):
        if isinstance(g, torch.Generator) and all(g is not h for h in out):
            out.append(g)
    return out


def dataset_length(loader: Any) -> Optional[int]:
    dataset = getattr(loader, "dataset", None)
    try:
        return None if dataset is None or isinstance(dataset, IterableDataset) else len(dataset)
    except TypeError:
        return None
