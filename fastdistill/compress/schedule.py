"""Pruning schedules: :class:`GradualPruner` raises a model's sparsity step by step while it trains.

Zhu & Gupta ("To prune, or not to prune", 2017): with pruning steps ``t = start, start + every, ..., end`` (and
``end`` itself), the sparsity after optimizer step ``t`` is

* ``"cubic"``:  ``s_t = s_f + (s_i - s_f) * (1 - (t - start) / (end - start)) ** 3`` - fast early, while the
  network can recover from it, slow near the end;
* ``"linear"``: ``s_t = s_i + (s_f - s_i) * (t - start) / (end - start)``.

Each pruning step calls :func:`fastdistill.compress.prune` with ``s_t``: the masks are recomputed from the current
weights, the zeros of earlier steps first (so a rising schedule never revives a weight under magnitude pruning), and
held through training by the optimizer-step hook ``compress.prune`` registers.
"""
from __future__ import annotations

import weakref
from typing import Dict, Optional, Tuple

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from .prune import Filter, prunable_layers, prune

SCHEDULES = ("cubic", "linear")

_PRUNERS: "weakref.WeakSet[GradualPruner]" = weakref.WeakSet()
_HOOK = None
# optimizer -> (number of params it holds, ids of those params); rebuilt when the count changes
_OWNED: "weakref.WeakKeyDictionary[torch.optim.Optimizer, Tuple[int, frozenset]]" = weakref.WeakKeyDictionary()


def _owned(optimizer: torch.optim.Optimizer) -> frozenset:
    count = sum(len(g["params"]) for g in optimizer.param_groups)
    cached = _OWNED.get(optimizer)
    if cached is None or cached[0] != count:
        cached = (count, frozenset(id(p) for g in optimizer.param_groups for p in g["params"]))
        _OWNED[optimizer] = cached
    return cached[1]


def _on_optimizer_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    if not _PRUNERS:
        return
    owned = _owned(optimizer)
    for pruner in list(_PRUNERS):
        if pruner._weight_id in owned:
            pruner.step()


def _int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return value


def _fraction(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}: expected a fraction in [0, 1], got {value!r}")
    return float(value)


def check_schedule(sparsity: object, start: object, end: object, every: object, schedule: object,
                   initial_sparsity: object = 0.0) -> Tuple[float, int, int, int, str, float]:
    """The checked (sparsity, start, end, every, schedule, initial_sparsity) of a pruning schedule."""
    final = _fraction(sparsity, "sparsity")
    initial = _fraction(initial_sparsity, "initial_sparsity")
    if initial > final:
        raise ValueError(f"initial_sparsity: expected at most sparsity ({final}), got {initial_sparsity}")
    first = _int(start, "start", 0)
    last = _int(end, "end", first)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {SCHEDULES}, got {schedule!r}")
    return final, first, last, _int(every, "every", 1), schedule, initial  # type: ignore[return-value]


class GradualPruner:
    """Prunes ``model`` to ``sparsity`` gradually, on a schedule of optimizer steps (formulas in this module's
    docstring).

    It counts the steps of every optimizer that owns the model's weights (through a global optimizer-step hook, so
    no call is needed in the training loop) and prunes after step ``start``, every ``every`` steps after it, and
    after step ``end``, where the target is reached. ``method``, ``scope``, ``include`` and ``exclude`` are passed
    to :func:`fastdistill.compress.prune`. With ``attach=False`` it counts nothing itself: call :meth:`step` after
    each optimizer step.

    ``state_dict()`` holds the step count; the masks are the model's own state (``weight_mask`` buffers).

    Example::

        >>> model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> pruner = fastdistill.compress.GradualPruner(model, 0.9, start=0, end=100, every=10)
        >>> for _ in range(100):
        ...     opt.zero_grad(); model(torch.randn(8, 64)).sum().backward(); opt.step()
        >>> round(fastdistill.compress.sparsity(model)["total"], 2)
        0.9
    """

    def __init__(self, model: nn.Module, sparsity: float, *, start: int, end: int, every: int,
                 schedule: str = "cubic", method: str = "magnitude", initial_sparsity: float = 0.0,
                 scope: str = "global", include: Filter = None, exclude: Filter = None, attach: bool = True):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        (self.sparsity, self.start, self.end, self.every, self.schedule,
         self.initial_sparsity) = check_schedule(sparsity, start, end, every, schedule, initial_sparsity)
        if method not in ("magnitude", "random"):
            raise ValueError(f"method: expected 'magnitude' or 'random', got {method!r}")
        layers = prunable_layers(model, include, exclude)
        if not layers:
            raise ValueError("model: no Linear/Conv layer matches include/exclude, nothing to prune")
        self.model = model
        self._options = dict(method=method, scope=scope, include=include, exclude=exclude)
        self._weight_id = id(layers[0][1].weight)
        self.steps = 0
        self.current: Optional[float] = None  # the sparsity of the last pruning step
        if attach:
            self.attach()

    def attach(self) -> None:
        """Counts the optimizer steps of every optimizer that owns the model's weights (the default)."""
        global _HOOK
        _PRUNERS.add(self)
        if _HOOK is None:
            _HOOK = register_optimizer_step_post_hook(_on_optimizer_step)

    def sparsity_at(self, step: int) -> float:
        """The scheduled sparsity after optimizer step ``step`` (``initial_sparsity`` before ``start``)."""
        if step >= self.end:
            return self.sparsity
        if step <= self.start:
            return self.initial_sparsity
        frac = (step - self.start) / (self.end - self.start)
        s_i, s_f = self.initial_sparsity, self.sparsity
        if self.schedule == "cubic":
            return s_f + (s_i - s_f) * (1.0 - frac) ** 3
        return s_i + (s_f - s_i) * frac

    def is_pruning_step(self, step: int) -> bool:
        return self.start <= step <= self.end and ((step - self.start) % self.every == 0 or step == self.end)

    def step(self) -> Optional[float]:
        """Counts one optimizer step; prunes if it is a pruning step. Returns the sparsity pruned to, or None."""
        self.steps += 1
        if not self.is_pruning_step(self.steps):
            return None
        target = self.sparsity_at(self.steps)
        if target > 0.0 or self.current is not None:
            prune(self.model, target, **self._options)
            self.current = target
        return target

    def remove(self) -> None:
        """Stops counting optimizer steps (the masks stay, held by ``compress.prune``'s hook)."""
        _PRUNERS.discard(self)

    def state_dict(self) -> Dict[str, object]:
        return {"steps": self.steps, "current": self.current}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.steps = int(state["steps"])  # type: ignore[arg-type]
        current = state.get("current")
        self.current = None if current is None else float(current)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (f"GradualPruner(sparsity={self.sparsity}, start={self.start}, end={self.end}, every={self.every}, "
                f"schedule={self.schedule!r}, steps={self.steps})")
