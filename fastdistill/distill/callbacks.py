"""Callbacks of :meth:`Distiller.fit <fastdistill.distill.Distiller.fit>`.

A callback overrides any of ``on_fit_start(d)``, ``on_epoch_start(d, epoch)``, ``on_step_end(d, step, terms)``,
``on_epoch_end(d, epoch, logs)``, ``on_fit_end(d)`` (``d`` the Distiller; ``epoch`` counts from 0, ``step`` is the
number of optimizer steps taken; ``terms`` the step's loss terms as 0-d tensors; ``logs`` the epoch's history
entry), and ``state_dict()`` / ``load_state_dict(state)`` for what a checkpoint must carry. Setting
``d.stop_training = True`` ends ``fit`` after the current epoch.
"""
from __future__ import annotations

import math
import types
from typing import Any, Dict, List, Optional, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from ..compress.prune import Filter, prunable_layers
from ..compress.schedule import GradualPruner, check_schedule
from ..quantization import fake_quantize


class Callback:
    """Base class: every hook does nothing."""

    def on_fit_start(self, distiller: Any) -> None:
        pass

    def on_epoch_start(self, distiller: Any, epoch: int) -> None:
        pass

    def on_step_end(self, distiller: Any, step: int, terms: Dict[str, Tensor]) -> None:
        pass

    def on_epoch_end(self, distiller: Any, epoch: int, logs: Dict[str, float]) -> None:
        pass

    def on_fit_end(self, distiller: Any) -> None:
        pass

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


class GradualPruning(Callback):
    """Prunes the student to ``final_sparsity`` while it distils, on Zhu & Gupta's schedule: a thin callback over
    :class:`fastdistill.compress.GradualPruner` (``start``, ``end``, ``every`` in optimizer steps; ``schedule``
    ``"cubic"`` or ``"linear"``; ``method`` and the other keywords as :func:`fastdistill.compress.prune`), which
    counts the optimizer's steps while ``fit`` runs. The masks are the student's ``weight_mask`` buffers (held
    through training by ``compress.prune``, saved with the student); the callback's checkpoint state is the
    pruner's step count.

    Example::

        >>> d = Distiller(teacher, student, callbacks=[GradualPruning(0.9, start=0, end=500, every=50)])
    """

    def __init__(self, final_sparsity: float, start: int, end: int, every: int, schedule: str = "cubic",
                 **prune_options: Any):
        check_schedule(final_sparsity, start, end, every, schedule)
        self.options = dict(sparsity=final_sparsity, start=start, end=end, every=every, schedule=schedule,
                            **prune_options)
        self.pruner: Optional[GradualPruner] = None
        self._pending: Optional[Dict[str, Any]] = None

    def on_fit_start(self, distiller: Any) -> None:
        if self.pruner is None or self.pruner.model is not distiller.student:
            self.pruner = GradualPruner(distiller.student, **self.options, attach=False)
            if self._pending is not None:
                self.pruner.load_state_dict(self._pending)
                self._pending = None
        self.pruner.attach()

    def on_fit_end(self, distiller: Any) -> None:
        if self.pruner is not None:
            self.pruner.remove()

    def state_dict(self) -> Dict[str, Any]:
        return self.pruner.state_dict() if self.pruner is not None else dict(self._pending or {})

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if self.pruner is not None:
            self.pruner.load_state_dict(state)
        else:
            self._pending = dict(state)


def _fake_quant_forward(self: nn.Linear, x: Tensor) -> Tensor:
    return F.linear(x, fake_quantize(self.weight, self._fd_qat_bits, granularity="channel"), self.bias)


class QuantizationAware(Callback):
    """Quantization-aware distillation: while ``fit`` runs, the student's ``nn.Linear`` layers (selected by
    ``include`` / ``exclude`` as in :func:`fastdistill.compress.prune`) compute with their weights fake-quantized
    to ``bits`` (symmetric, one scale per output channel: the scheme of :class:`fastdistill.nn.Int8Linear`) and a
    straight-through gradient, so the student learns weights that survive :func:`fastdistill.compress.quantize`.
    The float weights are what train and what is saved; the layers compute in float again after ``fit``.

    Example::

        >>> d = Distiller(teacher, student, callbacks=[QuantizationAware(bits=8)])
        >>> d.fit(loader, epochs=2)
        >>> int8_student = fastdistill.compress.quantize(student)
    """

    def __init__(self, bits: int = 8, include: Filter = None, exclude: Filter = None):
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
            raise ValueError(f"bits: expected an int in [2, 8], got {bits!r}")
        self.bits, self.include, self.exclude = bits, include, exclude
        self._layers: List[nn.Linear] = []

    def on_fit_start(self, distiller: Any) -> None:
        self._layers = [m for _, m in prunable_layers(distiller.student, self.include, self.exclude)
                        if type(m) is nn.Linear]
        for m in self._layers:
            m._fd_qat_bits = self.bits
            m.forward = types.MethodType(_fake_quant_forward, m)

    def on_fit_end(self, distiller: Any) -> None:
        for m in self._layers:
            del m.forward
            del m._fd_qat_bits
        self._layers = []


_MAXIMIZED = ("accuracy", "agreement")


class EarlyStopping(Callback):
    """Stops ``fit`` when ``monitor`` (a key of the epoch logs, e.g. ``"val_loss"`` or ``"val_accuracy"``) has not
    improved by more than ``min_delta`` for ``patience`` epochs. ``mode``: ``"min"``, ``"max"`` or ``"auto"``
    (max for accuracies, min otherwise).

    Example::

        >>> d = Distiller(teacher, student, callbacks=[EarlyStopping(patience=3, monitor="val_loss")])
        >>> d.fit(train_loader, epochs=100, val_loader=val_loader)
    """

    def __init__(self, patience: int = 3, monitor: str = "val_loss", mode: str = "auto", min_delta: float = 0.0):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience: expected an int >= 0, got {patience!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
        if not isinstance(monitor, str):
            raise TypeError(f"monitor: expected a key of the epoch logs (str), got {monitor!r}")
        self.patience, self.monitor, self.min_delta = patience, monitor, float(min_delta)
        self.maximize = mode == "max" or (mode == "auto" and monitor.endswith(_MAXIMIZED))
        self.best = -math.inf if self.maximize else math.inf
        self.wait = 0
        self.stopped_epoch: Optional[int] = None

    def on_epoch_end(self, distiller: Any, epoch: int, logs: Dict[str, float]) -> None:
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping: monitor {self.monitor!r} is not in the epoch logs {sorted(logs)} (give "
                           "fit a val_loader for val_* keys)")
        value = float(logs[self.monitor])
        better = value > self.best + self.min_delta if self.maximize else value < self.best - self.min_delta
        if better:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            distiller.stop_training = True

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best, self.wait = float(state["best"]), int(state["wait"])


def callback_states(callbacks: Tuple[Callback, ...]) -> List[Dict[str, Any]]:
    return [{"type": type(c).__name__, "state": c.state_dict()} for c in callbacks]


def load_callback_states(callbacks: Tuple[Callback, ...], states: List[Dict[str, Any]]) -> None:
    """Restores the states a checkpoint holds: each callback that had a state gets it back, matched in order to the
    given callbacks of its type (stateless callbacks may differ)."""
    given = list(callbacks)
    for saved in states:
        if not saved["state"]:
            continue
        match = next((c for c in given if type(c).__name__ == saved["type"]), None)
        if match is None:
            raise ValueError(f"callbacks: the checkpoint holds the state of a {saved['type']}; resume with the "
                             f"callbacks it was written with (got {[type(c).__name__ for c in callbacks]})")
        given = given[given.index(match) + 1:]
        match.load_state_dict(saved["state"])
