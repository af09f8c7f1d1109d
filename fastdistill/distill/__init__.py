"""Distillation on fastdistill's losses: a :class:`Distiller` (train / pretrain / fine-tune, soft targets, hidden
states, callbacks, checkpoints, torchrun), students made from the teacher's own blocks (:func:`shrink`), and
offline teachers (:func:`cache_teacher`, :class:`TeacherCache`).

Example::

    >>> from fastdistill.distill import Distiller, GradualPruning
    >>> d = Distiller(teacher, student, loss="entropy", callbacks=[GradualPruning(0.9, 0, 1000, 100)])
    >>> d.fit(train_loader, epochs=10, val_loader=val_loader)
"""
from .cache import TeacherCache, cache_teacher
from .callbacks import Callback, EarlyStopping, GradualPruning, QuantizationAware
from .distiller import MODES, Distiller
from .losses import LOSSES, SparseKDLoss, SparseTeacher
from .shrink import shrink

__all__ = ["Callback", "Distiller", "EarlyStopping", "GradualPruning", "LOSSES", "MODES", "QuantizationAware",
           "SparseKDLoss", "SparseTeacher", "TeacherCache", "cache_teacher", "shrink"]
