"""k-means compression of the samples: a weighted coreset of centroids that any estimator can train on."""
from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from sklearn.base import TransformerMixin
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from .. import _ops
from ._arrays import ArrayLike, check_X, check_y, float_tensor, is_chunked, is_dask, to_kind
from ._base import DataCompressor, Source, map_reduce

METHODS = ("kmeans", "minibatch")
Part = Dict[str, Any]


def kmeans_assign(X: ArrayLike, centroids: ArrayLike) -> Tuple[ArrayLike, ArrayLike]:
    """(labels, squared distances) of each row of ``X`` to its nearest row of ``centroids`` (float32 GEMM form
    ``||x||^2 - 2 x.c + ||c||^2``; ties go to the smaller index). numpy in -> numpy out, torch in -> torch out.

    Example::

        >>> labels, d2 = kmeans_assign(X, centers)     # X (n, d), centers (k, d)
    """
    torch_out = isinstance(X, Tensor)
    x, c = float_tensor(X), float_tensor(centroids)
    if x.dim() != 2 or c.dim() != 2:
        raise ValueError(f"X, centroids: expected 2-D arrays, got shapes {tuple(x.shape)} and {tuple(c.shape)}")
    if x.shape[1] != c.shape[1]:
        raise ValueError(f"centroids: expected {x.shape[1]} columns like X, got {c.shape[1]}")
    if c.shape[0] < 1:
        raise ValueError("centroids: expected at least one centroid")
    labels, d2 = _ops.call("kmeans_assign", x, c)
    return to_kind(labels, torch_out), to_kind(d2, torch_out)


def allocate(total: int, sizes: np.ndarray) -> np.ndarray:
    """Clusters per group: proportional to the group sizes (largest remainder), at least 1, at most the size."""
    if total < len(sizes):
        raise ValueError(f"n_clusters: {total} is fewer than the {len(sizes)} classes; per_class needs at least one "
                         "cluster per class")
    share = sizes / max(sizes.sum(), 1) * total
    k = np.maximum(1, np.floor(share).astype(np.int64))
    for g in np.argsort(-(share - np.floor(share)), kind="stable"):
        if k.sum() >= total:
            break
        k[g] += 1
    while k.sum() > total:  # the at-least-one rule overshot: take from the largest allocations
        k[np.argmax(k)] -= 1
    return np.minimum(k, sizes)


class ClusterCompressor(TransformerMixin, DataCompressor):
    """Replaces the samples by k-means centroids: ``fit(X, y)`` sets ``coreset_ = (X_core, y_core, sample_weight)``
    (the centroids, their labels and member counts), so any estimator trains on the coreset with
    ``fit(X_core, y_core, sample_weight=...)``. ``transform`` maps samples to their nearest centroid, ``predict``
    gives its index.

    With ``per_class`` (and labels) each class is clustered on its own, its share of the clusters proportional to its
    size, and each centroid carries its class; otherwise a centroid carries the majority label of its members (their
    mean for a continuous target). The assignment step (distances + argmin over every centroid) is a native kernel,
    :func:`kmeans_assign`. ``method="kmeans"`` runs Lloyd's algorithm from k-means++ seeds (drawn from a sample of
    up to ``init_size`` rows); ``"minibatch"`` runs mini-batch k-means, which :meth:`partial_fit` continues batch by
    batch. Chunked inputs (``np.memmap``, ``.npy`` path, iterables of chunks or of ``(X, y)`` chunks) and Dask arrays
    stream: Lloyd makes one pass per iteration (map-reduced over Dask blocks), mini-batch one pass, and both one more
    to count the members when the source can be read again.

    Parameters
    ----------
    n_clusters : int, or float in (0, 1]
        Number of centroids, or a fraction of the samples (0.1 = a 10% coreset).
    method : {"kmeans", "minibatch"}
    per_class : bool
    max_iter : int
        Lloyd iterations (epochs of in-memory mini-batch k-means).
    tol : float
        Stop when the centroids move (squared, summed) less than ``tol`` times the mean feature variance.
    batch_size : int
    init_size : int or None
        Rows the k-means++ seeding draws from (default ``max(20 * n_clusters, 10000)``).
    random_state : int or None

    Example::

        >>> cc = ClusterCompressor(0.1).fit(X, y)
        >>> Xc, yc, w = cc.coreset_
        >>> LogisticRegression().fit(Xc, yc, sample_weight=w)
    """

    _persist = ("cluster_centers_", "centroid_labels_", "counts_", "classes_", "inertia_", "n_iter_",
                "n_features_in_", "_bounds", "_label_counts", "_regression", "_running")

    def __init__(self, n_clusters: float = 0.1, *, method: str = "kmeans", per_class: bool = True,
                 max_iter: int = 100, tol: float = 1e-4, batch_size: int = 4096, init_size: Optional[int] = None,
                 random_state: Optional[int] = None, chunk_rows: Optional[int] = None):
        self.n_clusters = n_clusters
        self.method = method
        self.per_class = per_class
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.init_size = init_size
        self.random_state = random_state
        self.chunk_rows = chunk_rows

    # --- parameters and labels -----------------------------------------------------------------------------

    def _check_params(self) -> None:
        k = self.n_clusters
        if isinstance(k, bool) or not isinstance(k, numbers.Real):
            raise TypeError(f"n_clusters: expected an int or a fraction in (0, 1], got {k!r}")
        if isinstance(k, numbers.Integral) and k < 1:
            raise ValueError(f"n_clusters: expected at least 1, got {k}")
        if not isinstance(k, numbers.Integral) and not 0.0 < k <= 1.0:
            raise ValueError(f"n_clusters: expected an int or a fraction in (0, 1], got {k}")
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {self.method!r}")
        for name in ("max_iter", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive int, got {getattr(self, name)}")

    def _total(self, n: Optional[int]) -> int:
        k = self.n_clusters
        if isinstance(k, numbers.Integral):
            return int(k)
        if n is None:
            raise ValueError("n_clusters: a fraction needs the number of samples, which this stream does not tell; "
                             "pass an int")
        return max(1, int(round(k * n)))

    def _set_targets(self, y: Optional[np.ndarray]) -> None:
        self.classes_ = None
        self._regression = False
        if y is None:
            return
        from sklearn.utils.multiclass import type_of_target

        self._regression = type_of_target(y) == "continuous"
        if self._regression and self.per_class:
            raise ValueError("y: looks continuous (a regression target); per_class needs class labels, use "
                             "per_class=False")
        if not self._regression:
            self.classes_ = np.unique(y)

    def _encode(self, y: Any, n: int) -> Optional[np.ndarray]:
        """Class indices of y (float64 values for a regression target); None without labels."""
        if y is None:
            return None
        y = check_y(y, n)
        if self._regression:
            return y.astype(np.float64)
        if self.classes_ is None:
            raise ValueError("y: these clusters were laid out without labels")
        idx = np.minimum(np.searchsorted(self.classes_, y), len(self.classes_) - 1)
        if not np.array_equal(self.classes_[idx], y):
            unseen = np.setdiff1d(np.unique(y), self.classes_)
            raise ValueError(f"y: labels {unseen[:5].tolist()} were not seen when the clusters were laid out")
        return idx

    def _grouped(self) -> bool:
        return bool(self.per_class) and self.classes_ is not None

    def _groups(self, x: Tensor, codes: Optional[np.ndarray]) -> Tuple[Tensor, Optional[np.ndarray], np.ndarray]:
        """x (and codes) reordered so each class's rows are contiguous (when clustering per class), and the row
        bounds of the groups."""
        if not self._grouped():
            return x, codes, np.array([0, x.shape[0]])
        order = np.argsort(codes, kind="stable")
        sizes = np.bincount(codes, minlength=len(self.classes_))
        return x[torch.from_numpy(order)].contiguous(), codes[order], np.concatenate([[0], np.cumsum(sizes)])

    def _rows(self, xc: Any, yc: Any, first: bool = False) -> Tuple[Tensor, Optional[np.ndarray], np.ndarray]:
        x = check_X(self, xc, reset=first, dtype=(np.float32,))[0].cpu()
        return self._groups(x.contiguous(), self._encode(yc, x.shape[0]))

    # --- layout and seeding --------------------------------------------------------------------------------

    def _start(self, x: Tensor, rows: np.ndarray, sizes: np.ndarray, n: Optional[int]) -> None:
        """Lays the clusters out over the groups (``sizes``: rows per group in the whole data) and seeds them by
        k-means++ from the grouped sample ``x``."""
        from sklearn.cluster import kmeans_plusplus

        total = self._total(n)
        k = allocate(total, sizes) if len(sizes) > 1 else np.array([min(total, int(sizes[0]))])
        self._bounds = np.concatenate([[0], np.cumsum(k)]).astype(np.int64)
        gen = np.random.default_rng(self.random_state)
        limit = self.init_size or max(20 * total, 10000)
        centers = []
        for g, kg in enumerate(k):
            xs = x[rows[g]:rows[g + 1]].cpu().numpy()
            share = max(int(kg), int(limit * sizes[g] / max(sizes.sum(), 1)))
            if len(xs) > share:
                xs = xs[np.sort(gen.choice(len(xs), share, replace=False))]
            if len(xs) < kg:
                raise ValueError(f"X: the seeding sample holds {len(xs)} rows of group {g}, fewer than its {kg} "
                                 "clusters; raise init_size or chunk_rows")
            c, _ = kmeans_plusplus(xs, int(kg), random_state=int(gen.integers(2**31 - 1)))
            centers.append(c.astype(np.float32))
        self.cluster_centers_ = np.concatenate(centers)
        self._running = np.zeros(len(self.cluster_centers_))
        self.n_iter_ = 0

    # --- fitting -------------------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None) -> "ClusterCompressor":
        """Clusters X (array, tensor, ``np.memmap``, ``.npy`` path, iterable of chunks or of ``(X, y)`` chunks, Dask
        array); ``y`` (optional) labels the centroids."""
        self._check_params()
        for attr in ("n_features_in_", "cluster_centers_"):
            self.__dict__.pop(attr, None)
        if is_dask(X) or is_chunked(X):
            return self._fit_stream(X, y)
        x, _ = check_X(self, X, reset=True, dtype=(np.float32,))
        x = x.cpu()  # (fitting runs on the CPU kernels; transform and predict follow the input's device)
        self._set_targets(None if y is None else check_y(y, x.shape[0]))
        x, codes, rows = self._groups(x.contiguous(), self._encode(y, x.shape[0]))
        self._start(x, rows, np.diff(rows), x.shape[0])
        tol = self._tolerance(x)
        if self.method == "kmeans":
            for _ in range(self.max_iter):
                part = self._part(x, codes, rows, far=True)
                self.n_iter_ += 1
                if self._lloyd_step(part) <= tol:
                    break
        else:
            gen = np.random.default_rng(None if self.random_state is None else self.random_state + 1)
            for _ in range(self.max_iter):
                before = self.cluster_centers_.astype(np.float64)
                perm = gen.permutation(x.shape[0])
                for i in range(0, x.shape[0], self.batch_size):
                    sel = np.sort(perm[i:i + self.batch_size])
                    self._minibatch_step(x[torch.from_numpy(sel)], np.searchsorted(sel, rows))
                self.n_iter_ += 1
                if float(((self.cluster_centers_ - before) ** 2).sum()) <= tol:
                    break
        self._set_counts(self._part(x, codes, rows))
        return self

    def _fit_stream(self, X: Any, y: Any) -> "ClusterCompressor":
        src = Source(X, y, self.chunk_rows)
        limit = self.init_size or max(20 * self._total(src.n_rows), 10000)
        head = src.peek(lambda got: sum(len(c[0]) for c in got) >= limit)
        if not head:
            raise ValueError("X: no rows (the chunk source was empty)")
        x = torch.cat([check_X(self, c, reset=i == 0, dtype=(np.float32,))[0].cpu() for i, (c, _) in enumerate(head)])
        ys = None if head[0][1] is None else np.concatenate([check_y(c[1], len(c[0])) for c in head])
        y_all = None if y is None or not src.reiterable else np.asarray(y)
        self._set_targets(ys if y_all is None else check_y(y_all, len(y_all)))
        x, _, rows = self._groups(x.contiguous(), self._encode(ys, x.shape[0]))
        sizes = np.diff(rows)
        if y_all is not None and self._grouped():  # the real class sizes, known before the data is read
            sizes = np.bincount(self._encode(y_all, len(y_all)), minlength=len(self.classes_))
        self._start(x, rows, sizes, src.n_rows)
        tol = self._tolerance(x)
        if self.method == "kmeans" and src.reiterable:
            for _ in range(self.max_iter):
                part = map_reduce(self._chunk_part, _merge_parts, X, y, self.chunk_rows)
                self.n_iter_ += 1
                if self._lloyd_step(part) <= tol:
                    break
        else:
            counted: Optional[Part] = None
            for xc, yc in src:
                xg, codes, r = self._rows(xc, yc)
                for i in range(0, xg.shape[0], self.batch_size):
                    j = min(i + self.batch_size, xg.shape[0])
                    self._minibatch_step(xg[i:j], np.clip(r, i, j) - i)
                if not src.reiterable:  # one pass only: members counted as the chunks go by
                    p = self._part(xg, codes, r)
                    counted = p if counted is None else _merge_parts(counted, p)
            self.n_iter_ = 1
            if counted is not None:
                self._set_counts(counted)
                return self
        self._set_counts(map_reduce(self._chunk_part, _merge_parts, X, y, self.chunk_rows))
        return self

    def partial_fit(self, X: ArrayLike, y: Any = None) -> "ClusterCompressor":
        """One mini-batch k-means update with the rows of X (whatever ``method`` says). The first call lays the
        clusters out: it fixes the classes (all must appear in it) and seeds the centroids from it. Member counts
        (``counts_``, the coreset weights) add up each batch's assignment."""
        self._check_params()
        first = not hasattr(self, "cluster_centers_")
        x = check_X(self, X, reset=first, dtype=(np.float32,))[0].cpu()
        if first:
            self._set_targets(None if y is None else check_y(y, x.shape[0]))
            self._label_counts = None
        x, codes, rows = self._groups(x.contiguous(), self._encode(y, x.shape[0]))
        if first:
            self._start(x, rows, np.diff(rows), None)
        for i in range(0, x.shape[0], self.batch_size):
            j = min(i + self.batch_size, x.shape[0])
            self._minibatch_step(x[i:j], np.clip(rows, i, j) - i)
        part = self._part(x, codes, rows)
        if not first:
            part = _merge_parts(part, {"counts": self.counts_, "inertia": self.inertia_,
                                       **({} if self._label_counts is None else {"labels": self._label_counts})})
        self.n_iter_ += 1
        self._set_counts(part)
        return self

    # --- the steps -----------------------------------------------------------------------------------------

    def _tolerance(self, x: Tensor) -> float:
        return float(self.tol) * float(x.double().var(0, unbiased=False).mean()) if x.shape[0] > 1 else 0.0

    def _assign(self, x: Tensor, rows: np.ndarray) -> Tuple[Tensor, Tensor]:
        """Labels (global centroid indices) and squared distances; group g's rows only see group g's centroids."""
        c = torch.from_numpy(self.cluster_centers_)
        if len(rows) == 2:
            return _ops.call("kmeans_assign", x, c)
        labels = torch.empty(x.shape[0], dtype=torch.int64)
        d2 = torch.empty(x.shape[0], dtype=torch.float32)
        for g in range(len(rows) - 1):
            a, b = int(rows[g]), int(rows[g + 1])
            if b > a:
                lo, hi = int(self._bounds[g]), int(self._bounds[g + 1])
                lg, dg = _ops.call("kmeans_assign", x[a:b], c[lo:hi].contiguous())
                labels[a:b] = lg + lo
                d2[a:b] = dg
        return labels, d2

    def _part(self, x: Tensor, codes: Optional[np.ndarray], rows: np.ndarray, far: bool = False) -> Part:
        """Per-centroid sums, member counts, inertia, label counts and (``far``) each group's farthest rows."""
        labels, d2 = self._assign(x, rows)
        k = len(self.cluster_centers_)
        sums, counts = _ops.call("centroid_sums", x, labels, k)
        part: Part = {"sums": sums.numpy(), "counts": counts.double().numpy(), "inertia": float(d2.double().sum())}
        if codes is not None and not self._grouped():
            lab = labels.numpy()
            if self._regression:
                part["labels"] = np.stack([np.bincount(lab, weights=codes, minlength=k),
                                           np.bincount(lab, minlength=k).astype(np.float64)], 1)
            else:
                lc = np.zeros((k, len(self.classes_)))
                np.add.at(lc, (lab, codes), 1.0)
                part["labels"] = lc
        if far:
            part["far"] = [_farthest(x[rows[g]:rows[g + 1]], d2[rows[g]:rows[g + 1]],
                                     int(self._bounds[g + 1] - self._bounds[g])) for g in range(len(rows) - 1)]
        return part

    def _chunk_part(self, xc: Any, yc: Any) -> Part:
        return self._part(*self._rows(xc, yc), far=True)

    def _lloyd_step(self, part: Part) -> float:
        """Centroids = member means; an empty centroid moves onto a farthest row of its group (as scikit-learn
        relocates them). Returns the squared shift."""
        new = (part["sums"] / np.maximum(part["counts"], 1)[:, None]).astype(np.float32)
        empty = part["counts"] == 0
        new[empty] = self.cluster_centers_[empty]
        for g in range(len(self._bounds) - 1):
            idx = np.nonzero(empty[self._bounds[g]:self._bounds[g + 1]])[0] + self._bounds[g]
            pts = part["far"][g][:len(idx)]
            new[idx[:len(pts)]] = pts
        shift = float(((new.astype(np.float64) - self.cluster_centers_) ** 2).sum())
        self.cluster_centers_ = new
        return shift

    def _minibatch_step(self, xb: Tensor, rows: np.ndarray) -> None:
        """One mini-batch update (Sculley 2010, per-centroid rate 1 / members seen, as scikit-learn's)."""
        if xb.shape[0] == 0:
            return
        part = self._part(xb.contiguous(), None, rows)
        bc = part["counts"]
        self._running += bc
        hit = bc > 0
        c = self.cluster_centers_.astype(np.float64)
        c[hit] += (part["sums"][hit] - bc[hit, None] * c[hit]) / self._running[hit, None]
        self.cluster_centers_ = c.astype(np.float32)

    def _set_counts(self, part: Part) -> None:
        self.counts_ = part["counts"]
        self.inertia_ = float(part["inertia"])
        self._label_counts = part.get("labels")
        if self._grouped():
            groups = np.repeat(np.arange(len(self._bounds) - 1), np.diff(self._bounds))
            self.centroid_labels_ = self.classes_[groups]
        elif self._label_counts is None:
            self.centroid_labels_ = None
        elif self._regression:
            s, c = self._label_counts[:, 0], self._label_counts[:, 1]
            self.centroid_labels_ = np.where(c > 0, s / np.maximum(c, 1), 0.0)
        else:
            self.centroid_labels_ = self.classes_[np.argmax(self._label_counts, 1)]

    # --- using the clusters --------------------------------------------------------------------------------

    @property
    def coreset_(self) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
        """(centroids, their labels or None, member counts as sample weights), empty clusters left out."""
        check_is_fitted(self, "cluster_centers_")
        keep = self.counts_ > 0
        labels = None if self.centroid_labels_ is None else np.asarray(self.centroid_labels_)[keep]
        return self.cluster_centers_[keep], labels, self.counts_[keep]

    def _nearest(self, X: Any, one: Callable[[Any], Any], cols: Optional[int]) -> Tuple[Any, Optional[Tensor], bool]:
        check_is_fitted(self, "cluster_centers_")
        out = self._transform_any(X, one, cols, np.int64 if cols is None else np.float32, self.chunk_rows)
        if out is not None:
            return out, None, False
        x, torch_out = check_X(self, X, reset=False, finite=False, dtype=(np.float32,))
        labels, _ = _ops.call("kmeans_assign", x.contiguous(), self._centers(x.device))
        return None, labels, torch_out

    def _centers(self, device: torch.device) -> Tensor:
        return torch.from_numpy(self.cluster_centers_).to(device)

    def predict(self, X: Any) -> Any:
        """Index of each sample's nearest centroid (over all centroids, whatever their class)."""
        out, labels, torch_out = self._nearest(X, self.predict, None)
        return out if labels is None else to_kind(labels, torch_out)

    def transform(self, X: Any) -> Any:
        """Each sample replaced by its nearest centroid (float32, same shape)."""
        out, labels, torch_out = self._nearest(X, self.transform, getattr(self, "n_features_in_", None))
        return out if labels is None else to_kind(self._centers(labels.device)[labels], torch_out)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


def _farthest(x: Tensor, d2: Tensor, m: int) -> np.ndarray:
    """Up to m rows of x farthest from their centroids (candidates for empty centroids)."""
    if x.shape[0] == 0 or m <= 0:
        return np.empty((0, x.shape[1]), np.float32)
    return x[torch.topk(d2, min(m, x.shape[0])).indices].cpu().numpy().astype(np.float32)


def _merge_parts(a: Part, b: Part) -> Part:
    out: Part = {"counts": a["counts"] + b["counts"], "inertia": a["inertia"] + b["inertia"]}
    for key in ("sums", "labels"):
        if key in a and key in b:
            out[key] = a[key] + b[key]
    if "far" in a and "far" in b:
        out["far"] = [np.concatenate([fa, fb]) for fa, fb in zip(a["far"], b["far"])]
    return out
