"""``compress_dataset``: a chain of data compressors run on a labelled (or unlabelled) dataset, with a report of what
each step saved and cost, and of how a quick reference classifier fares on the compressed data."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .cluster import ClusterCompressor
from .pca import PCACompressor
from .quantize import DataQuantizer
from .select import FeatureSelector

Step = Union[str, Any, Tuple[str, Any]]


def parse_step(spec: str) -> Tuple[str, Any]:
    """A compressor from a short spec: ``pca:0.95`` / ``pca:20``, ``select:mutual_info:20``, ``clusters:200`` /
    ``clusters:0.1[:minibatch]``, ``quantize:8[:log]``."""
    kind, *args = spec.strip().split(":")
    try:
        if kind == "pca" and len(args) == 1:
            return "pca", PCACompressor(_number(args[0]))
        if kind == "select" and len(args) == 2:
            return "select", FeatureSelector(args[0], int(args[1]))
        if kind == "clusters" and len(args) in (1, 2):
            return "clusters", ClusterCompressor(_number(args[0]), method=args[1] if len(args) == 2 else "kmeans",
                                                 random_state=0)
        if kind == "quantize" and len(args) in (1, 2):
            return "quantize", DataQuantizer(int(args[0]), args[1] if len(args) == 2 else "asymmetric")
    except ValueError as exc:
        raise ValueError(f"steps: {spec!r}: {exc}") from None
    raise ValueError(f"steps: {spec!r} is not a step; expected pca:FRACTION|COUNT, select:METHOD:K, "
                     "clusters:COUNT|FRACTION[:minibatch], quantize:BITS[:SCHEME]")


def _number(text: str) -> Union[int, float]:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


def _named(step: Step, i: int) -> Tuple[str, Any]:
    if isinstance(step, str):
        return parse_step(step)
    if isinstance(step, tuple):
        return step
    names = {PCACompressor: "pca", FeatureSelector: "select", ClusterCompressor: "clusters", DataQuantizer: "quantize"}
    return names.get(type(step), f"step{i}"), step


@dataclass
class CompressedData:
    """What :func:`compress_dataset` returns.

    ``X`` is the compressed training data as stored (integer codes when the last step quantizes), ``y`` and
    ``sample_weight`` the labels and weights to train on (a clustering step's coreset labels and member counts),
    ``steps`` the fitted compressors, ``report`` the bytes, errors and accuracies. :meth:`features` decodes ``X``
    into the float features a model trains on; :meth:`transform` maps new samples (test data, a device's inputs)
    into that same feature space.
    """

    X: Any
    y: Optional[Any]
    sample_weight: Optional[np.ndarray]
    steps: List[Tuple[str, Any]]
    report: Dict[str, Any] = field(default_factory=dict)

    def features(self) -> Any:
        """The training features as floats (``X`` decoded when the last step quantizes)."""
        last = self.steps[-1][1] if self.steps else None
        return last.inverse_transform(self.X) if isinstance(last, DataQuantizer) else self.X

    def transform(self, X: Any) -> Any:
        """New samples through the feature steps (clustering only reduces the training samples), decoded."""
        out = X
        for _, step in self.steps:
            if isinstance(step, ClusterCompressor):
                continue
            out = step.transform(out)
            if isinstance(step, DataQuantizer):
                out = step.inverse_transform(out)
        return out


def _nbytes(a: Any) -> int:
    return int(a.numel() * a.element_size()) if isinstance(a, Tensor) else int(np.asarray(a).nbytes)


def _model_bytes(step: Any) -> int:
    total = 0
    for name in step._persist:
        v = getattr(step, name, None)
        if isinstance(v, (np.ndarray, Tensor)):
            total += _nbytes(v)
    return total


def _rmse(a: Any, b: Any) -> Tuple[float, float]:
    """(rmse, rmse / std of a) between two same-shape arrays."""
    a = torch.as_tensor(np.asarray(a) if not isinstance(a, Tensor) else a).double()
    b = torch.as_tensor(np.asarray(b) if not isinstance(b, Tensor) else b).double()
    if a.numel() == 0:
        return 0.0, 0.0
    rmse = float(torch.sqrt(((a - b) ** 2).mean()))
    std = float(a.std()) if a.numel() > 1 else 0.0
    return rmse, (rmse / std if std > 0 else 0.0)


def _run(steps: List[Tuple[str, Any]], X: Any, y: Any) -> Tuple[Any, Any, Optional[np.ndarray], List[Dict]]:
    """Fits and applies the steps in order; per-step records."""
    cur, cy, w = X, y, None
    records = []
    for name, step in steps:
        t0 = time.perf_counter()
        rec: Dict[str, Any] = {"step": name, "compressor": repr(step), "shape_in": list(cur.shape),
                               "bytes_in": _nbytes(cur)}
        if isinstance(step, ClusterCompressor):
            step.fit(cur, cy)
            xc, yc, wc = step.coreset_
            rmse, rel = _rmse(cur, step.transform(cur))
            cur = torch.from_numpy(xc) if isinstance(cur, Tensor) else xc
            cy, w = yc, wc
        elif isinstance(step, DataQuantizer):
            codes = step.fit(cur).transform(cur)
            rmse, rel = _rmse(cur, step.inverse_transform(codes))
            cur = codes
        else:
            z = step.fit(cur, cy).transform(cur)
            rmse, rel = _rmse(cur, step.inverse_transform(z))
            cur = z
        rec.update(shape_out=list(cur.shape), bytes_out=_nbytes(cur), model_bytes=_model_bytes(step), rmse=rmse,
                   relative_rmse=rel, seconds=time.perf_counter() - t0)
        records.append(rec)
    return cur, cy, w, records


def _default_classifier(random_state: Optional[int]) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=random_state))


def _numpy(a: Any) -> np.ndarray:
    return a.cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)


def _fit_classifier(clf: Any, X: Any, y: Any, w: Optional[np.ndarray]) -> Any:
    from sklearn.pipeline import Pipeline

    X = _numpy(X)
    if w is None:
        return clf.fit(X, y)
    if isinstance(clf, Pipeline):  # every step that takes weights gets them (the scaler's mean and variance too)
        import inspect

        kw = {f"{n}__sample_weight": w for n, s in clf.steps if "sample_weight" in inspect.signature(s.fit).parameters}
        return clf.fit(X, y, **kw)
    return clf.fit(X, y, sample_weight=w)


def compress_dataset(X: Any, y: Any = None, steps: Sequence[Step] = ("pca:0.95", "quantize:8"), *,
                     evaluate: bool = True, eval_data: Optional[Tuple[Any, Any]] = None, test_size: float = 0.25,
                     classifier: Any = None, random_state: Optional[int] = 0) -> CompressedData:
    """Runs ``steps`` (compressors, or specs such as ``"pca:0.95"``, ``"select:mutual_info:20"``,
    ``"clusters:0.1"``, ``"quantize:8"``; at most one clusters step, at most one quantize step, last) on ``X`` (and
    labels ``y``) and reports bytes before/after and each step's reconstruction error. With labels and ``evaluate``,
    the report also holds the accuracy of a quick reference classifier (standardized logistic regression, or
    ``classifier``) trained on the original versus the compressed data, scored on ``eval_data`` or, without it, on
    a stratified ``test_size`` holdout (the steps are then fitted again on the rest for that comparison).

    Example::

        >>> out = compress_dataset(X, y, ["pca:0.95", "quantize:8"])
        >>> out.report["ratio"], out.report["accuracy"]
        >>> model.fit(out.features(), out.y, sample_weight=out.sample_weight)
        >>> model.score(out.transform(X_test), y_test)
    """
    from sklearn.base import clone

    named = [_named(s, i) for i, s in enumerate(steps)]
    quantizers = [i for i, (_, s) in enumerate(named) if isinstance(s, DataQuantizer)]
    if len(quantizers) > 1 or (quantizers and quantizers[0] != len(named) - 1):
        raise ValueError("steps: at most one quantize step, and it must come last")
    if sum(isinstance(s, ClusterCompressor) for _, s in named) > 1:
        raise ValueError("steps: at most one clusters step (a second would weight centroids, not samples)")
    if y is not None:
        y = y.cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
        if len(y) != X.shape[0]:
            raise ValueError(f"y: expected {X.shape[0]} labels (one per sample), got {len(y)}")
    fitted = [(n, clone(s)) for n, s in named]
    cur, cy, w, records = _run(fitted, X, y)
    report: Dict[str, Any] = {"samples_in": int(X.shape[0]), "samples_out": int(cur.shape[0]),
                              "bytes_before": _nbytes(X), "bytes_after": _nbytes(cur),
                              "model_bytes": sum(r["model_bytes"] for r in records), "steps": records}
    report["ratio"] = report["bytes_before"] / max(report["bytes_after"], 1)
    result = CompressedData(cur, cy, w, fitted, report)
    if evaluate and y is not None:
        report["accuracy"] = _evaluate(named, X, y, eval_data, test_size, classifier, random_state, result)
    return result


def _evaluate(named: List[Tuple[str, Any]], X: Any, y: np.ndarray, eval_data: Optional[Tuple[Any, Any]],
              test_size: float, classifier: Any, random_state: Optional[int], fitted: CompressedData
              ) -> Dict[str, Any]:
    """Accuracy of the reference classifier trained on the original and on the compressed training data."""
    from sklearn.base import clone

    if eval_data is not None:
        x_tr, y_tr, x_te, y_te = X, y, eval_data[0], np.asarray(eval_data[1])
        comp = fitted
    else:
        from sklearn.model_selection import train_test_split

        classes, counts = np.unique(y, return_counts=True)
        strat = y if len(classes) > 1 and counts.min() >= 2 else None
        idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=test_size, random_state=random_state,
                                          stratify=strat)
        rows = (lambda i: X[torch.from_numpy(i)]) if isinstance(X, Tensor) else (lambda i: np.asarray(X)[i])  # noqa: E731
        x_tr, y_tr, x_te, y_te = rows(idx_tr), y[idx_tr], rows(idx_te), y[idx_te]
        steps = [(n, clone(s)) for n, s in named]
        cur, cy, w, _ = _run(steps, x_tr, y_tr)
        comp = CompressedData(cur, cy, w, steps)
    base = classifier if classifier is not None else _default_classifier(random_state)
    original = _fit_classifier(clone(base), x_tr, y_tr, None)
    compressed = _fit_classifier(clone(base), comp.features(), comp.y, comp.sample_weight)
    acc_o = float(original.score(_numpy(x_te), y_te))
    acc_c = float(compressed.score(_numpy(comp.transform(x_te)), y_te))
    return {"classifier": repr(base), "original": acc_o, "compressed": acc_c, "difference": acc_c - acc_o,
            "test_samples": int(len(y_te)), "holdout": eval_data is None}
