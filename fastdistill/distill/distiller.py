"""The Distiller: a teacher-student training loop on fastdistill's losses."""
from __future__ import annotations

import copy
import math
import os
import random
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.data.distributed import DistributedSampler

from .. import distributed
from ..compress.prune import restore_masks
from ._batch import SAMPLE_INDEX, batch_size, call, output_tensor, split, to_device
from .._files import atomic_write
from ._data import dataset_length, generators, rebuild_loader
from .cache import TeacherCache
from .callbacks import Callback, callback_states, load_callback_states
from .features import (FeatureHooks, build_projections, check_feature_loss, feature_terms, projection_widths,
                       projections_from_state)
from .losses import SparseTeacher, make_loss

MODES = ("train", "pretrain", "finetune")
DEFAULT_LR = {"train": 1e-3, "pretrain": 1e-3, "finetune": 1e-4}
CHECKPOINT_FORMAT, CHECKPOINT_VERSION = "fastdistill-distiller", 1


class _WithIndex:
    """A batch with the dataset indices of its samples (what a TeacherCache is read with)."""

    __slots__ = ("indices", "batch")

    def __init__(self, indices: Tensor, batch: Any):
        self.indices, self.batch = indices, batch


class _Trainable(nn.Module):
    """The student and the feature projections as one module, for DistributedDataParallel to synchronise the
    gradients of both (the projections run outside forward, in the loss)."""

    def __init__(self, student: nn.Module, projections: Optional[nn.ModuleList]):
        super().__init__()
        self.student = student
        self.projections = projections

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.student(*args, **kwargs)


def _rng_state(gens: Sequence[torch.Generator]) -> Dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                    gauss],
             "torch": torch.get_rng_state(), "generators": [g.get_state() for g in gens]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any], gens: Sequence[torch.Generator]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if len(state["generators"]) != len(gens):
        raise ValueError(f"resume: the checkpoint's loader had {len(state['generators'])} random generator(s), this "
                         f"one has {len(gens)}; resume with a loader built the same way")
    for g, s in zip(gens, state["generators"]):
        g.set_state(s)


def _number(value: object, name: str, low: float, inclusive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
            (value < low if inclusive else value <= low):
        raise ValueError(f"{name}: expected a finite number {'>=' if inclusive else '>'} {low}, got {value!r}")
    return float(value)


class Distiller:
    """Trains ``student`` to imitate ``teacher``: soft targets (and labels), hidden states, schedules, callbacks,
    checkpoints, and data parallelism under ``torchrun``.

    Args:
        teacher: an ``nn.Module`` (run in eval mode without gradients, never modified) or a
            :class:`~fastdistill.distill.TeacherCache` (an offline teacher; then the loss must take a sparse teacher,
            e.g. ``"entropy_sparse"``, and ``features`` are not available).
        student: the ``nn.Module`` that trains.
        loss: a name from :data:`fastdistill.distill.LOSSES` (``"entropy"``, ``"info_entropy"``,
            ``"entropy_sparse"``, ``"jsd"``, ``"reverse_kl"``; formulas in :mod:`fastdistill.distill.losses`), a loss
            module such as :class:`fastdistill.nn.KDLoss` or :class:`~fastdistill.distill.SparseKDLoss`, or any
            callable ``(student_output, teacher_output, labels) -> loss``. Default:
            ``fastdistill.nn.KDLoss(temperature=4.0, alpha=0.5)``.
        features: ``{"student.module.path": "teacher.module.path", ...}``: hidden-state distillation through
            forward hooks; a learned linear projection maps the student's features where the widths differ (its
            parameters join the optimizer); with a Hugging Face batch, tokens are weighted by its
            ``attention_mask``.
        feature_loss: ``"mse"`` or ``"cosine"``; ``feature_weight``: its factor in the total loss.
        mode: the teacher-student framework:

            * ``"train"``: labels and soft targets: the loss as given (``alpha`` weighs soft targets against the
              labels' cross-entropy), plus the feature terms.
            * ``"pretrain"``: a transfer set without labels: the labels are never read (batches may lack them), the
              loss's ``alpha`` is taken as 1 (soft targets only), plus the feature terms.
            * ``"finetune"``: as ``"train"`` at a fine-tuning learning rate (default ``lr`` 1e-4 instead of 1e-3),
              for a student that starts from pretrained weights (after ``"pretrain"``, or ``shrink(teacher, ...)``).
        optimizer: an optimizer over the student's parameters (the projections are added to it as a parameter
            group), or None: ``torch.optim.AdamW(lr=lr)`` over the student's trainable parameters and the
            projections.
        lr: the default optimizer's learning rate (None: 1e-3, or 1e-4 for ``mode="finetune"``).
        scheduler: None, an LR scheduler on ``optimizer``, or a callable ``optimizer -> scheduler`` (called when
            the default optimizer is built); stepped after every optimizer step.
        callbacks: :class:`~fastdistill.distill.Callback` objects (``GradualPruning``, ``QuantizationAware``,
            ``EarlyStopping``, your own).
        device: where the models and batches go (default: the student's device). Under ``torchrun``, ``"cuda"``
            means this process's GPU.
        comm_hook: a DDP communication hook for the student's gradients under ``torchrun`` (e.g.
            :func:`fastdistill.distributed.quantized_allreduce_hook`), or ``(state, hook)``.

    Batches are tensors, ``(inputs,)`` / ``(inputs, labels)`` tuples, or Hugging Face dicts (``model(**batch)``,
    labels from ``batch["labels"]``, logits from ``.logits`` when the output is not a tensor). Labels index the
    last dimension of the student's logits (class indices, ``-100`` ignored).

    Example::

        >>> d = Distiller(teacher, student, loss="entropy", features={"0": "2"})
        >>> history = d.fit(train_loader, epochs=10, val_loader=val_loader)
        >>> d.evaluate(test_loader)["accuracy"]
    """

    def __init__(self, teacher: Union[nn.Module, TeacherCache], student: nn.Module, *,
                 loss: Union[None, str, Callable[..., Tensor]] = None, features: Optional[Dict[str, str]] = None,
                 feature_loss: str = "mse", feature_weight: float = 1.0, mode: str = "train",
                 optimizer: Optional[torch.optim.Optimizer] = None, lr: Optional[float] = None,
                 scheduler: Any = None, callbacks: Sequence[Callback] = (),
                 device: Optional[Union[str, torch.device]] = None, comm_hook: Any = None):
        if not isinstance(student, nn.Module):
            raise TypeError(f"student: expected an nn.Module, got {type(student).__name__}")
        if not isinstance(teacher, (nn.Module, TeacherCache)):
            raise TypeError(f"teacher: expected an nn.Module or a TeacherCache, got {type(teacher).__name__}")
        if teacher is student:
            raise ValueError("teacher: is the student itself; give the student a copy (copy.deepcopy or shrink)")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        self.teacher, self.student, self.mode = teacher, student, mode
        self.loss = make_loss(loss)
        if mode == "pretrain" and isinstance(getattr(self.loss, "alpha", None), float):
            self.loss = copy.copy(self.loss)  # (a module's copy shares nothing mutable we change)
            self.loss.alpha = 1.0
        self.cached = isinstance(teacher, TeacherCache)
        if self.cached and not getattr(self.loss, "accepts_sparse_teacher", False):
            raise ValueError("loss: a TeacherCache serves the teacher's top-k; use loss='entropy_sparse' or a "
                             "SparseKDLoss at the cache's temperature")
        self.feature_loss = check_feature_loss(feature_loss)
        self.feature_weight = _number(feature_weight, "feature_weight", 0.0)
        if features is not None and self.cached:
            raise ValueError("features: hidden-state distillation needs the teacher model, not a TeacherCache")
        self.lr = DEFAULT_LR[mode] if lr is None else _number(lr, "lr", 0.0, inclusive=False)
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if scheduler is not None and not _is_factory(scheduler) and \
                not isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler):
            raise TypeError(f"scheduler: expected an LR scheduler or a callable optimizer -> scheduler, got "
                            f"{type(scheduler).__name__}")
        if isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler) and scheduler.optimizer is not optimizer:
            raise ValueError("scheduler: an LR scheduler instance must be on the optimizer given as optimizer=; "
                             "for the default optimizer give a callable optimizer -> scheduler")
        self.callbacks: Tuple[Callback, ...] = tuple(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks: expected Callback objects, got {type(cb).__name__}")
        self._step_callbacks = [cb for cb in self.callbacks if type(cb).on_step_end is not Callback.on_step_end]

        first = next(iter(student.parameters()), None)
        dev = torch.device(device) if device is not None else (first.device if first is not None else
                                                                torch.device("cpu"))
        self.device = distributed.local_device(dev)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.rank, self.world_size = distributed.init_from_env(self.device)
        if device is not None:
            student.to(self.device)
            if not self.cached:
                teacher.to(self.device)  # type: ignore[union-attr]
        self._hooks = FeatureHooks(student, teacher, features) if features is not None else None  # type: ignore
        self.projections: Optional[nn.ModuleList] = None
        self.optimizer = optimizer
        self._scheduler_arg = scheduler
        self.scheduler = scheduler if scheduler is not None and not _is_factory(scheduler) else None
        self._comm_hook = comm_hook
        self._ddp: Optional[nn.Module] = None
        self._ready = False
        self._sampler_seed: Optional[int] = None
        self._checked_cache = False

        self.epoch = 0          # epochs completed
        self.global_step = 0    # optimizer steps taken
        self.batch_in_epoch = 0  # batches of the current epoch done (non-zero only inside an epoch)
        self._in_epoch = False
        self.history: List[Dict[str, float]] = []
        self.stop_training = False
        self._gens: List[torch.Generator] = []
        self._epoch_rng: Optional[Dict[str, Any]] = None
        self._resume: Optional[Dict[str, Any]] = None
        if self._hooks is None:
            self._setup(None)

    # ------------------------------------------------------------------------------------------------ setup

    def _setup(self, batch: Any) -> None:
        """Builds what needs the first batch (the projections: the feature widths are known only then), then the
        optimizer, scheduler and DDP wrapper."""
        if self._ready:
            return
        if self._hooks is not None and self.projections is None:
            if batch is None:
                raise RuntimeError("features: the projections are built from the first batch; call step/fit first")
            was = self.student.training
            self.student.eval()  # no dropout: the widths are all this pass is for
            try:
                with torch.no_grad():
                    captured = self._forward(batch, self.student)[3]
            finally:
                self.student.train(was)
            self.projections = build_projections(projection_widths(captured)).to(self.device)
        params = [p for p in self.student.parameters() if p.requires_grad]
        extra = [] if self.projections is None else list(self.projections.parameters())
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(params + extra, lr=self.lr)
        elif extra:
            self.optimizer.add_param_group({"params": extra})
        if self.scheduler is None and self._scheduler_arg is not None:
            self.scheduler = self._scheduler_arg(self.optimizer)
        if self.world_size > 1:
            ddp = torch.nn.parallel.DistributedDataParallel(
                _Trainable(self.student, self.projections),
                device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self._comm_hook is not None:
                state, hook = self._comm_hook if isinstance(self._comm_hook, tuple) else (None, self._comm_hook)
                ddp.register_comm_hook(state, hook)
            self._ddp = ddp
        self._ready = True

    def _loader(self, loader: Any, train: bool) -> Any:
        """The loader as this process reads it: its share under DDP, with dataset indices for a TeacherCache."""
        if not isinstance(loader, DataLoader):
            if self.world_size > 1 or self.cached:
                raise TypeError(f"loader: expected a torch DataLoader (its sampler is replaced under torchrun and for "
                                f"a TeacherCache), got {type(loader).__name__}")
            return loader
        sampler = None
        if self.world_size > 1 and not isinstance(loader.sampler, DistributedSampler):
            if train:
                if self._sampler_seed is None:
                    self._sampler_seed = distributed.broadcast_int(torch.initial_seed() % (1 << 31))
                sampler = DistributedSampler(loader.dataset, num_replicas=self.world_size, rank=self.rank,
                                             shuffle=isinstance(loader.sampler, RandomSampler),
                                             seed=self._sampler_seed, drop_last=loader.drop_last)
            else:
                sampler = distributed.ShardSampler(len(loader.dataset), self.rank, self.world_size)
        if sampler is None and not self.cached:
            return loader
        return rebuild_loader(loader, sampler=sampler, indexed=self.cached)

    # ------------------------------------------------------------------------------------------------ loss

    def _teacher_output(self, inputs: Any, indices: Optional[Tensor]) -> Union[Tensor, SparseTeacher]:
        if self.cached:
            if indices is None:
                raise ValueError(f"batch: a TeacherCache is read by dataset index; the Distiller's fit/evaluate add "
                                 f"them, a dict batch may carry them as {SAMPLE_INDEX!r}")
            rows = self.teacher[indices]  # type: ignore[index]
            return SparseTeacher(*(to_device(x, self.device) for x in rows))
        teacher = self.teacher
        if teacher.training:  # type: ignore[union-attr]
            teacher.eval()  # type: ignore[union-attr]
        with torch.no_grad():
            return output_tensor(call(teacher, inputs), "teacher")  # type: ignore[arg-type]

    def _check_cache(self, s: Tensor, teacher_out: SparseTeacher) -> None:
        cache: TeacherCache = self.teacher  # type: ignore[assignment]
        cache.check(vocab_size=int(s.shape[-1]), temperature=getattr(self.loss, "temperature", None))
        if tuple(s.shape[1:-1]) != cache.row_shape:
            raise ValueError(f"TeacherCache: its samples have rows {cache.row_shape} but the student's output has "
                             f"{tuple(s.shape[1:-1])}")
        self._checked_cache = True

    def _forward(self, batch: Any, model: nn.Module) -> Tuple[Tensor, Dict[str, Tensor], Tensor, Any]:
        """(total loss, terms, student output tensor, labels) of one batch; before the projections exist (the
        widths pass of _setup), (output, {}, output, captured features)."""
        indices = None
        if isinstance(batch, _WithIndex):
            indices, batch = batch.indices, batch.batch
        batch = to_device(batch, self.device)
        inputs, labels = split(batch)
        if isinstance(batch, dict) and SAMPLE_INDEX in batch:
            indices = batch[SAMPLE_INDEX]
        hooks = self._hooks
        if hooks is not None:
            hooks.active = True
        try:
            teacher_out = self._teacher_output(inputs, indices)
            s = output_tensor(call(model, inputs), "student")
            captured = hooks.captured() if hooks is not None else None
        finally:
            if hooks is not None:
                hooks.active = False
                hooks.clear()
        if self.cached and not self._checked_cache:
            self._check_cache(s, teacher_out)  # type: ignore[arg-type]
        if self.projections is None and captured is not None:  # the widths pass of _setup
            return s, {}, s, captured
        target = None if self.mode == "pretrain" else labels
        distill = self.loss(s, teacher_out, target)
        if captured is None:
            detached = distill.detach()
            return distill, {"distill": detached, "loss": detached}, s, labels
        mask = batch.get("attention_mask") if isinstance(batch, dict) else None
        feat = feature_terms(captured, self.projections, self.feature_loss, mask)  # type: ignore[arg-type]
        total = distill + self.feature_weight * feat
        return total, {"distill": distill.detach(), "feature": feat.detach(), "loss": total.detach()}, s, labels

    def compute_loss(self, batch: Any) -> Tuple[Tensor, Dict[str, Tensor]]:
        """(loss, terms) of one batch: the total loss (with its graph) and its terms as detached 0-d tensors
        (``"loss"``, ``"distill"``: the output-level loss, ``"feature"`` when there are features). Drops into a
        Hugging Face ``Trainer.compute_loss`` or any hand-written loop (then the optimizer is yours: with
        projections, give it ``distiller.projections.parameters()`` too).

        Example::

            >>> loss, terms = distiller.compute_loss(batch)
            >>> loss.backward()
        """
        self._setup(batch)
        total, terms = self._forward(batch, self._ddp if self._ddp is not None else self.student)[:2]
        return total, terms

    # ------------------------------------------------------------------------------------------------ training

    def step(self, batch: Any) -> Dict[str, Tensor]:
        """One optimizer step on ``batch``: loss, backward, ``optimizer.step()``, ``scheduler.step()``. Returns the
        loss terms (detached 0-d tensors; ``float()`` them to log)."""
        total, terms = self.compute_loss(batch)
        opt = self.optimizer
        opt.zero_grad(set_to_none=True)  # type: ignore[union-attr]
        total.backward()
        opt.step()  # type: ignore[union-attr]
        if self.scheduler is not None:
            self.scheduler.step()
        self.global_step += 1
        if self._in_epoch:
            self.batch_in_epoch += 1
        for cb in self._step_callbacks:
            cb.on_step_end(self, self.global_step, terms)
        return terms

    def fit(self, train_loader: Any, epochs: int = 1, *, val_loader: Any = None,
            progress: bool = True) -> List[Dict[str, float]]:
        """Trains for ``epochs`` more epochs over ``train_loader`` (evaluating on ``val_loader`` after each) and
        returns the history: one dict per epoch (``epoch``, ``loss`` and its terms averaged over the epoch's
        samples, ``lr``, ``samples_per_s``, ``seconds``, and ``val_*`` from :meth:`evaluate`). A tqdm bar per epoch
        shows the loss and samples/s, unless ``progress`` is False or stderr is not a terminal (and only on rank
        0). A run resumed with :meth:`resume` continues where the checkpoint was written, bit for bit on CPU.

        Example::

            >>> history = distiller.fit(train_loader, epochs=5, val_loader=val_loader)
            >>> history[-1]["val_accuracy"]
        """
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs: expected an int >= 0, got {epochs!r}")
        loader = self._loader(train_loader, train=True)
        if self.cached:
            self.teacher.check(num_samples=dataset_length(train_loader))  # type: ignore[union-attr]
        self._gens = generators(loader)
        self.stop_training = False
        for cb in self.callbacks:
            cb.on_fit_start(self)
        try:
            for _ in range(epochs):
                logs = self._epoch(loader, progress)
                if val_loader is not None:
                    logs.update({f"val_{k}": v for k, v in self.evaluate(val_loader).items()})
                self.history.append(logs)
                for cb in self.callbacks:
                    cb.on_epoch_end(self, self.epoch - 1, logs)
                if self.stop_training:
                    break
        finally:
            for cb in self.callbacks:
                cb.on_fit_end(self)
        return self.history

    def _epoch(self, loader: Any, progress: bool) -> Dict[str, float]:
        epoch = self.epoch
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        resume, self._resume = self._resume, None
        skip = resume["batch_in_epoch"] if resume else 0
        if resume:
            _set_rng_state(resume["epoch_rng"] if skip else resume["rng"], self._gens)
        self._epoch_rng = _rng_state(self._gens)  # before iter(): creating the iterator draws from it
        batches = iter(loader)
        for _ in range(skip):
            next(batches)
        if skip:
            _set_rng_state(resume["rng"], self._gens)  # type: ignore[index]
        self.batch_in_epoch = skip
        for cb in self.callbacks:
            cb.on_epoch_start(self, epoch)
        self.student.train()
        total = len(loader) if hasattr(loader, "__len__") else None
        bar = _progress_bar(progress and self.rank == 0, total, skip, f"epoch {epoch + 1}")
        records: List[Tuple[Dict[str, Tensor], int]] = []  # summed once at the end: no per-step tensor ops
        samples, start, shown = 0, time.perf_counter(), 0.0
        self._in_epoch = True
        try:
            for batch in batches:
                if self.cached:
                    batch = _WithIndex(*batch)
                n = batch_size(*split(batch.batch if self.cached else batch))
                terms = self.step(batch)
                records.append((terms, n))
                samples += n
                if bar is not None:
                    bar.update(1)
                    now = time.perf_counter()
                    if now - shown > 0.5:
                        shown = now
                        bar.set_postfix(loss=f"{float(terms['loss']):.4g}",
                                        samples_per_s=f"{samples / max(now - start, 1e-9):.0f}", refresh=False)
        finally:
            self._in_epoch = False
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - start
        keys = sorted(records[0][0]) if records else []
        weights = torch.tensor([float(n) for _, n in records], dtype=torch.float64)
        sums = [torch.stack([t[k] for t, _ in records]).double().cpu() @ weights for k in keys]
        reduced = distributed.reduce_sum(torch.stack(sums + [torch.tensor(float(samples), dtype=torch.float64)]))
        count = max(float(reduced[-1]), 1.0)
        self.epoch += 1
        self.batch_in_epoch = 0
        logs: Dict[str, float] = {"epoch": float(self.epoch)}
        logs.update({k: float(reduced[i]) / count for i, k in enumerate(keys)})
        logs["lr"] = float(self.optimizer.param_groups[0]["lr"])  # type: ignore[union-attr]
        logs["samples_per_s"] = float(reduced[-1]) / max(seconds, 1e-9)
        logs["seconds"] = seconds
        return logs

    def evaluate(self, loader: Any) -> Dict[str, float]:
        """The loss (and its terms) averaged over ``loader``'s samples, and ``accuracy`` of the student's argmax
        when the batches have labels (rows labelled -100 not counted); reduced over the ranks under torchrun. With
        a TeacherCache, a loader whose dataset is not the cached one (another length) gets the accuracy only.

        Example::

            >>> distiller.evaluate(test_loader)
            {'distill': 0.41, 'loss': 0.41, 'accuracy': 0.97}
        """
        # a TeacherCache has rows for its own dataset only: another loader gets the student's accuracy alone
        teacher_rows = not self.cached or dataset_length(loader) == len(self.teacher)  # type: ignore[arg-type]
        loader = self._loader(loader, train=False) if teacher_rows else loader
        was = self.student.training
        self.student.eval()
        sums: Dict[str, Tensor] = {}
        samples, correct, counted = 0, 0, 0
        try:
            with torch.no_grad():
                for batch in loader:
                    if not teacher_rows:
                        inputs, labels = split(to_device(batch, self.device))
                        s, terms = output_tensor(call(self.student, inputs), "student"), {}
                    else:
                        if self.cached:
                            batch = _WithIndex(*batch)
                        self._setup(batch)
                        _, terms, s, labels = self._forward(batch, self.student)
                    n = batch_size(s, labels)
                    for k, v in terms.items():
                        sums[k] = sums[k] + v * n if k in sums else v * n
                    samples += n
                    if labels is not None and not labels.dtype.is_floating_point and \
                            labels.shape == s.shape[:-1]:
                        live = labels != -100
                        correct += int(((s.argmax(-1) == labels) & live).sum())
                        counted += int(live.sum())
        finally:
            self.student.train(was)
        keys = sorted(sums)
        reduced = distributed.reduce_sum(torch.tensor(
            [float(sums[k]) for k in keys] + [float(samples), float(correct), float(counted)], dtype=torch.float64))
        out = {k: float(reduced[i]) / max(float(reduced[-3]), 1.0) for i, k in enumerate(keys)}
        if float(reduced[-1]) > 0:
            out["accuracy"] = float(reduced[-2]) / float(reduced[-1])
        return out

    # ------------------------------------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, path: Union[str, os.PathLike]) -> None:
        """Writes the state needed to continue training (student, projections, optimizer, scheduler, epoch, step,
        history, callbacks, and the random states of torch, numpy, python and the loader) to ``path``, atomically
        (a temporary file renamed over it). Only rank 0 writes under torchrun. Read with :meth:`resume`.

        Example::

            >>> distiller.save_checkpoint("ckpt.pt")
        """
        if self.rank != 0:
            return
        state = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "mode": self.mode,
            "student": self.student.state_dict(),
            "projections": None if self.projections is None else self.projections.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "epoch": self.epoch, "global_step": self.global_step, "batch_in_epoch": self.batch_in_epoch,
            "history": self.history, "callbacks": callback_states(self.callbacks),
            "rng": _rng_state(self._gens),
            "epoch_rng": self._epoch_rng if self.batch_in_epoch else None,
            "sampler_seed": self._sampler_seed,
        }
        atomic_write(path, lambda tmp: torch.save(state, tmp))

    @classmethod
    def resume(cls, path: Union[str, os.PathLike], teacher: Union[nn.Module, TeacherCache], student: nn.Module,
               **kwargs: Any) -> "Distiller":
        """A Distiller built with ``Distiller(teacher, student, **kwargs)`` (the same arguments as the run that
        wrote the checkpoint: loss, features, callbacks in the same order...) and the state of checkpoint ``path``;
        ``fit`` then continues from there: N epochs in one run equal k epochs plus N - k resumed ones, bit for
        bit on CPU (with the same loader, batch size and thread count).

        Example::

            >>> d = Distiller.resume("ckpt.pt", teacher, fresh_student, loss="entropy")
            >>> d.fit(train_loader, epochs=remaining)
        """
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch.load raises many kinds (UnpicklingError, RuntimeError, EOFError...)
            raise ValueError(f"resume: cannot read checkpoint {os.fspath(path)!r} ({exc})") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"resume: {os.fspath(path)!r} is not a Distiller checkpoint")
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"resume: checkpoint version {state.get('version')!r}, this fastdistill reads "
                             f"{CHECKPOINT_VERSION}")
        d = cls(teacher, student, **kwargs)
        if state["mode"] != d.mode:
            raise ValueError(f"resume: the checkpoint was written in mode {state['mode']!r}, not {d.mode!r}")
        restore_masks(d.student, state["student"])  # a pruned student's masks: state a fresh model lacks
        d.student.load_state_dict(state["student"])
        if state["projections"] is not None:
            if d._hooks is None:
                raise ValueError("resume: the checkpoint has feature projections; give the same features=")
            d.projections = projections_from_state(state["projections"], len(d._hooks.pairs)).to(d.device)
            d.projections.load_state_dict(state["projections"])
        if d._hooks is None or d.projections is not None:  # (else the first batch sets up, as in a fresh run)
            d._setup(None)
        if state["optimizer"] is not None:
            d.optimizer.load_state_dict(state["optimizer"])  # type: ignore[union-attr]
        if state["scheduler"] is not None:
            if d.scheduler is None:
                raise ValueError("resume: the checkpoint has a scheduler state; give the same scheduler=")
            d.scheduler.load_state_dict(state["scheduler"])
        d.epoch, d.global_step = int(state["epoch"]), int(state["global_step"])
        d.history = list(state["history"])
        d._sampler_seed = state["sampler_seed"]
        load_callback_states(d.callbacks, state["callbacks"])
        d._resume = {"rng": state["rng"], "epoch_rng": state["epoch_rng"], "batch_in_epoch":
                     int(state["batch_in_epoch"])}
        return d


def _is_factory(scheduler: Any) -> bool:
    return callable(scheduler) and not isinstance(scheduler, (type, torch.optim.lr_scheduler.LRScheduler))


def _progress_bar(enabled: bool, total: Optional[int], initial: int, desc: str) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False, dynamic_ncols=True)
