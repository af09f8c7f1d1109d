"""Batches as the Distiller takes them, and model outputs as it reads them.

A batch is a tensor (inputs, no labels), a tuple / list ``(inputs,)`` or ``(inputs, labels)``, or a dict in the
Hugging Face style (the model is called as ``model(**batch)`` without the ``"labels"`` and ``"sample_index"`` keys;
labels are ``batch["labels"]``). An output is a tensor, or has ``.logits`` (Hugging Face), or else its first tensor
is used (``last_hidden_state`` of an encoder, the first element of a tuple).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, Tuple

import torch
from torch import Tensor, nn

LABELS = "labels"
SAMPLE_INDEX = "sample_index"  # dataset indices of a dict batch's rows (what a TeacherCache is keyed by)
_NOT_INPUTS = (LABELS, SAMPLE_INDEX)


# (checks for the common types first: isinstance against an abstract Mapping costs a microsecond per call, which
# the Distiller's step would pay several times)
def to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, Tensor):
        return x.to(device, non_blocking=True) if x.device != device else x
    if isinstance(x, (tuple, list)):
        return type(x)([to_device(v, device) for v in x])
    if isinstance(x, Mapping):  # (a BatchEncoding becomes a plain dict)
        return {k: to_device(v, device) for k, v in x.items()}
    return x


def split(batch: Any) -> Tuple[Any, Optional[Tensor]]:
    """(model inputs, labels or None)."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)):
        if len(batch) == 1:
            return batch[0], None
        if len(batch) == 2:
            return batch[0], batch[1]
        raise ValueError(f"batch: expected (inputs,) or (inputs, labels), got a {type(batch).__name__} of "
                         f"{len(batch)} items; pass several inputs as a dict (model(**batch))")
    if isinstance(batch, Mapping):
        return {k: v for k, v in batch.items() if k not in _NOT_INPUTS}, batch.get(LABELS)
    raise TypeError(f"batch: expected a tensor, a tuple (inputs, labels) or a dict, got {type(batch).__name__}")


def call(model: nn.Module, inputs: Any) -> Any:
    return model(inputs) if isinstance(inputs, Tensor) else model(**inputs) if isinstance(inputs, Mapping) else \
        model(inputs)


def first_tensor(out: Any) -> Optional[Tensor]:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        for v in out:
            t = first_tensor(v)
            if t is not None:
                return t
    return None


def output_tensor(out: Any, who: str) -> Tensor:
    """The logits (``.logits``) or else the first tensor of a model's output."""
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, Mapping):
        logits = out.get("logits")
    if isinstance(logits, Tensor):
        return logits
    t = first_tensor(out)
    if t is None:
        raise TypeError(f"{who}: the model's output ({type(out).__name__}) holds no tensor")
    return t


def batch_size(inputs: Any, labels: Optional[Tensor]) -> int:
    if labels is not None:
        return int(labels.shape[0])
    t = first_tensor(inputs)
    return int(t.shape[0]) if t is not None and t.dim() else 1
