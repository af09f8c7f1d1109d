"""Hidden-state distillation through forward hooks: neither model is edited.

For each pair ``student path -> teacher path`` a forward hook on each module keeps its output (the first tensor of
it: Hugging Face layers return tuples) while the Distiller computes a loss, and only then. When the widths (last
dimensions) differ, a learned ``nn.Linear(student width, teacher width, bias=False)`` maps the student's features
into the teacher's space; the projections are built on the first batch (their widths are known only then) and
train with the student.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from torch import Tensor, nn

from ._batch import first_tensor
from .losses import feature_loss

FEATURE_LOSSES = ("mse", "cosine")


class FeatureHooks:
    """Captures the paired modules' outputs while :attr:`active`."""

    def __init__(self, student: nn.Module, teacher: nn.Module, pairs: Dict[str, str]):
        if not isinstance(pairs, dict) or not pairs:
            raise TypeError(f"features: expected a non-empty dict {{student module: teacher module}}, got {pairs!r}")
        self.pairs: List[Tuple[str, str]] = []
        for s_path, t_path in pairs.items():
            if not isinstance(s_path, str) or not isinstance(t_path, str):
                raise TypeError(f"features: expected module paths (str) on both sides, got {s_path!r}: {t_path!r}")
            self.pairs.append((s_path, t_path))
        self.active = False
        self.student_out: List[Optional[Tensor]] = [None] * len(self.pairs)
        self.teacher_out: List[Optional[Tensor]] = [None] * len(self.pairs)
        self._handles = []
        for i, (s_path, t_path) in enumerate(self.pairs):
            for side, model, path, store in (("student", student, s_path, self.student_out),
                                             ("teacher", teacher, t_path, self.teacher_out)):
                try:
                    module = model.get_submodule(path)
                except AttributeError:
                    names = [n for n, _ in model.named_modules() if n][:12]
                    raise ValueError(f"features: the {side} has no module {path!r} (it has e.g. {names})") from None
                self._handles.append(module.register_forward_hook(self._hook(store, i, side, path)))

    def _hook(self, store: List[Optional[Tensor]], i: int, side: str, path: str):
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if self.active:
                t = first_tensor(out)
                if t is None:
                    raise TypeError(f"features: the {side}'s module {path!r} returned no tensor")
                store[i] = t
        return hook

    def clear(self) -> None:
        for i in range(len(self.pairs)):
            self.student_out[i] = self.teacher_out[i] = None

    def captured(self) -> List[Tuple[Tensor, Tensor]]:
        out = []
        for (s_path, t_path), s, t in zip(self.pairs, self.student_out, self.teacher_out):
            if s is None or t is None:
                side, path = ("student", s_path) if s is None else ("teacher", t_path)
                raise RuntimeError(f"features: the {side}'s module {path!r} did not run in the forward pass")
            out.append((s, t))
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def build_projections(widths: List[Tuple[int, int]]) -> nn.ModuleList:
    """One ``nn.Linear(w_s, w_t, bias=False)`` per pair whose widths differ, ``nn.Identity`` where they match."""
    return nn.ModuleList([nn.Identity() if ws == wt else nn.Linear(ws, wt, bias=False) for ws, wt in widths])


def feature_terms(captured: List[Tuple[Tensor, Tensor]], projections: nn.ModuleList, kind: str,
                  mask: Optional[Tensor]) -> Tensor:
    """Sum over pairs of the feature loss of ``projection(student feature)`` against the teacher's, tokens weighted
    by ``mask`` (an attention mask of the features' leading shape) when given."""
    total = None
    for (s, t), proj in zip(captured, projections):
        s = proj(s)
        w = mask if mask is not None and mask.shape == s.shape[:-1] else None
        term = feature_loss(s, t.detach(), kind, w)
        total = term if total is None else total + term
    assert total is not None
    return total


def projection_widths(captured: List[Tuple[Tensor, Tensor]]) -> List[Tuple[int, int]]:
    return [(int(s.shape[-1]), int(t.shape[-1])) for s, t in captured]


def projections_from_state(state: Dict[str, Tensor], n: int) -> nn.ModuleList:
    """The projections a checkpoint holds (``{i}.weight`` of shape (teacher width, student width) per projected
    pair), rebuilt before loading their weights."""
    widths = []
    for i in range(n):
        w = state.get(f"{i}.weight")
        widths.append((1, 1) if w is None else (int(w.shape[1]), int(w.shape[0])))
    return build_projections(widths)


def check_feature_loss(kind: object) -> str:
    if kind not in FEATURE_LOSSES:
        raise ValueError(f"feature_loss: expected one of {FEATURE_LOSSES}, got {kind!r}")
    return kind  # type: ignore[return-value]

