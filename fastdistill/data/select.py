"""Feature selection: keep the k most useful features by a statistic, by information (mutual information, entropy
with redundancy pruning), or by a model (recursive elimination, L1)."""
from __future__ import annotations

import math
import numbers
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch
from sklearn.feature_selection import SelectorMixin
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from .. import _ops
from ._arrays import ArrayLike, check_X, check_y, float_tensor, is_chunked, is_dask, to_kind
from ._base import DataCompressor, Source, map_reduce

METHODS = ("mutual_info", "entropy", "correlation", "chi2", "f_classif", "variance", "rfe", "lasso")
STATISTICS = ("correlation", "chi2", "f_classif", "variance", "mutual_info", "entropy")  # these stream
CLASS_LABELS = ("chi2", "f_classif")
Stats = Dict[str, Any]


def auto_bins(n: int) -> int:
    """Bins per feature for information estimates: 2 n^(1/3) (Rice's rule), within [8, 256]."""
    return int(min(256, max(8, round(2.0 * n ** (1.0 / 3.0)))))


EDGE_ROWS = 16384  # rows the bin edges are estimated from: ~300 per bin at 54 bins, within a few % of equal counts


def quantile_edges(sample: Tensor, n_bins: int) -> np.ndarray:
    """(d, n_bins - 1) float32 edges splitting each feature of ``sample`` (m, d) into equal-count bins."""
    s = np.sort(np.ascontiguousarray(sample.float().cpu().numpy().T), axis=1)  # (numpy sorts rows 10x faster)
    m = s.shape[1]
    pos = np.minimum(m - 1, (np.arange(1, n_bins) * m) // n_bins)
    return np.ascontiguousarray(s[:, pos])


def bin_codes(X: ArrayLike, edges: ArrayLike) -> ArrayLike:
    """Feature-major uint8 codes (d, n): ``codes[j, i]`` = number of ``edges[j]`` <= ``X[i, j]`` (at most 255
    ascending edges per feature). numpy in -> numpy out, torch in -> torch out."""
    torch_out = isinstance(X, Tensor)
    x, e = float_tensor(X), float_tensor(edges)
    if x.dim() != 2 or e.dim() != 2 or e.shape[0] != x.shape[1]:
        raise ValueError(f"X, edges: expected (n, d) and (d, m) arrays, got {tuple(x.shape)} and {tuple(e.shape)}")
    return to_kind(_ops.call("bin_codes", x, e), torch_out)


def joint_histograms(codes: ArrayLike, target: ArrayLike, n_target: int, n_bins: int) -> ArrayLike:
    """(d, n_target, n_bins) int64 joint counts of each row of the uint8 ``codes`` (d, n) with ``target`` (n,)
    in [0, n_target). numpy in -> numpy out, torch in -> torch out."""
    torch_out = isinstance(codes, Tensor)
    c = codes if torch_out else torch.from_numpy(np.ascontiguousarray(codes))
    t = target if isinstance(target, Tensor) else torch.from_numpy(np.ascontiguousarray(target))
    if c.dtype != torch.uint8 or c.dim() != 2:
        raise TypeError(f"codes: expected a 2-D uint8 array (d, n), got {c.dtype} of shape {tuple(c.shape)}")
    if t.dim() != 1 or t.shape[0] != c.shape[1]:
        raise ValueError(f"target: expected {c.shape[1]} values, got shape {tuple(t.shape)}")
    out = _ops.call("joint_histograms", c.contiguous(), t.to(torch.int32).contiguous(), int(n_target), int(n_bins))
    return to_kind(out, torch_out)


def mutual_information(h: np.ndarray) -> np.ndarray:
    """Mutual information (nats) of each (n_target, n_bins) joint histogram in ``h`` (d, n_target, n_bins), with
    the Miller-Madow bias correction (the plug-in estimate overstates it by about (cells - 1) / 2N, more for
    features with more occupied bins), clipped at 0."""
    n = np.maximum(h.sum((1, 2)), 1).astype(np.float64)
    pxy = h / n[:, None, None]
    px, py = pxy.sum(1), pxy.sum(2)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pxy > 0, pxy * np.log(pxy / (py[:, :, None] * px[:, None, :])), 0.0)
    cells = (h > 0).sum((1, 2)) - (px > 0).sum(1) - (py > 0).sum(1) + 1
    return np.maximum(terms.sum((1, 2)) - cells / (2.0 * n), 0.0)


def _entropy(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(1)


def symmetric_uncertainty(h: np.ndarray) -> np.ndarray:
    """2 I(a; b) / (H(a) + H(b)) of each joint histogram (d, na, nb): the bias-corrected information over the
    plug-in marginal entropies, in [0, 1] (0 where both are constant)."""
    p = h / np.maximum(h.sum((1, 2)), 1)[:, None, None]
    denom = _entropy(p.sum(2)) + _entropy(p.sum(1))
    return np.where(denom > 0, 2.0 * mutual_information(h) / np.where(denom > 0, denom, 1.0), 0.0).clip(0.0, 1.0)


def pair_bins(n: int, n_bins: int) -> int:
    """Bins per feature for a feature-feature table of n rows: about 10 rows per cell (an emptier table's
    information is mostly bias), at most the features' own bins."""
    return int(min(n_bins, max(2, math.isqrt(max(n, 1) // 10))))


class FeatureSelector(SelectorMixin, DataCompressor):
    """Keeps the ``k`` best features by ``method``; a scikit-learn selector (``get_support()``, ``scores_``,
    ``transform``, ``inverse_transform``), numpy in -> numpy out, torch in -> torch out.

    Methods (scores as scikit-learn computes them where it has the method, so the selection agrees with
    ``SelectKBest`` / ``VarianceThreshold`` / ``RFE`` / ``SelectFromModel`` on the same data):

    * ``"variance"``: feature variance (unsupervised).
    * ``"correlation"``: ``|r|`` with the target (``r_regression``).
    * ``"chi2"``, ``"f_classif"``: ``sklearn.feature_selection.chi2`` / ``f_classif`` (class labels; chi2 needs
      non-negative features).
    * ``"mutual_info"``: mutual information with the target from 8-bit per-feature codes (equal-count bins,
      2 n^(1/3) of them by default, their edges estimated on at most 16384 rows evenly strided over X) and a native
      joint-histogram kernel, Miller-Madow corrected. A continuous target is binned the same way.
    * ``"entropy"``: the source method's information-entropy pruning: rank by information gain (symmetric
      uncertainty with the target), then walk the ranking and drop a feature when its symmetric uncertainty with an
      already kept feature is at least its own with the target (the FCBF redundancy rule). Both are bias-corrected
      (Miller-Madow) and the feature-feature tables use coarser bins (about 10 rows per cell), without which the
      plug-in information of two independent features on a few hundred rows exceeds most features' relevance.
      If fewer than ``k`` survive, the best dropped ones fill up to ``k``; ``redundant_`` marks the dropped
      features. Redundancy is
      measured on up to ``max_rows`` rows (a random sample; for chunked inputs, the first ones).
    * ``"rfe"``: recursive feature elimination with ``estimator`` (default: ``RidgeClassifier`` / ``Ridge``, whose
      closed-form fits keep the dozens of refits quick).
    * ``"lasso"``: the largest ``|coef|`` of an L1-penalized model (``estimator``, default: L1 logistic regression
      with ``C=0.1`` for class labels, ``Lasso(alpha=0.01)`` otherwise), as ``SelectFromModel(max_features=k)``.

    The statistic methods (all but rfe and lasso) also fit on chunked inputs (``np.memmap``, ``.npy`` path,
    iterables of ``(X, y)`` chunks) and Dask arrays, from per-chunk sums or histograms.

    Example::

        >>> sel = FeatureSelector("mutual_info", k=12).fit(X, y)
        >>> X_small = sel.transform(X)          # (n, 12)
        >>> sel.get_support(indices=True)
    """

    _persist = ("scores_", "support_", "ranking_", "redundant_", "edges_", "n_features_in_", "classes_")

    def __init__(self, method: str = "mutual_info", k: Union[int, str] = 10, *, estimator: Any = None,
                 n_bins: Union[int, str] = "auto", max_rows: int = 100_000, random_state: Optional[int] = 0,
                 chunk_rows: Optional[int] = None):
        self.method = method
        self.k = k
        self.estimator = estimator
        self.n_bins = n_bins
        self.max_rows = max_rows
        self.random_state = random_state
        self.chunk_rows = chunk_rows

    # --- checks --------------------------------------------------------------------------------------------

    def _check_params(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {self.method!r}")
        k = self.k
        if not (k == "all" or (isinstance(k, numbers.Integral) and not isinstance(k, bool) and k >= 1)):
            raise ValueError(f"k: expected a positive int or 'all', got {k!r}")
        if self.n_bins != "auto" and not (isinstance(self.n_bins, numbers.Integral) and 2 <= self.n_bins <= 256):
            raise ValueError(f"n_bins: expected 'auto' or an int in [2, 256], got {self.n_bins!r}")

    def _check_k(self, d: int) -> int:
        if self.k == "all":
            return d
        if self.k > d:
            raise ValueError(f"k: {self.k} is more than the {d} features of X")
        return int(self.k)

    def _targets(self, y: Any, n: int) -> Tuple[np.ndarray, bool]:
        """(y as a 1-D array, whether it is continuous); sets ``classes_``; the errors a supervised method owes."""
        if y is None:
            raise ValueError(f"y: method {self.method!r} is supervised; pass the labels (or use method='variance')")
        from sklearn.utils.multiclass import type_of_target

        y = check_y(y, n)
        values = np.unique(y)
        if len(values) < 2:
            raise ValueError(f"y: all {n} labels are {values.tolist()[0]!r} (1 class); a supervised score needs at "
                             "least two distinct values (a constant y, such as y = zeros, makes every score NaN)")
        continuous = type_of_target(y) == "continuous"
        if continuous and self.method in CLASS_LABELS:
            raise ValueError(f"y: looks continuous; method {self.method!r} needs class labels")
        self.classes_ = None if continuous else values
        self._y_edges = np.sort(y.astype(np.float64)) if continuous else None
        return y, continuous

    def _y_values(self, y: np.ndarray, continuous: bool) -> np.ndarray:
        """Class indices (or float64 values of a continuous target) for the statistic methods."""
        if continuous:
            return y.astype(np.float64)
        idx = np.minimum(np.searchsorted(self.classes_, y), len(self.classes_) - 1)
        if not np.array_equal(self.classes_[idx], y):
            raise ValueError(f"y: labels {np.setdiff1d(np.unique(y), self.classes_)[:5].tolist()} were not in the "
                             "labels the selector was set up with")
        return idx

    def _y_codes(self, y: np.ndarray, continuous: bool, n_bins: int) -> Tuple[Tensor, int]:
        """int32 target codes for the joint histograms (class indices, or equal-count bins of a continuous
        target) and how many there are."""
        if continuous:
            edges = self._y_edges
            return torch.from_numpy(np.searchsorted(edges, y.astype(np.float64), side="right").astype(np.int32)), \
                n_bins
        return torch.from_numpy(self._y_values(y, False).astype(np.int32)), len(self.classes_)

    # --- fitting -------------------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None) -> "FeatureSelector":
        """Scores the features of X (array, tensor; for the statistic methods also a chunked source or a Dask
        array) and keeps the k best."""
        self._check_params()
        self.__dict__.pop("n_features_in_", None)
        self.redundant_ = None
        self.edges_ = None
        self.ranking_ = None
        self.classes_ = None
        if is_dask(X) or is_chunked(X):
            if self.method not in STATISTICS:
                raise ValueError(f"method: {self.method!r} needs X in memory (an array or a tensor)")
            return self._fit_stream(X, y)
        x = check_X(self, X, reset=True)[0].cpu()
        k = self._check_k(x.shape[1])
        if self.method == "variance":
            if y is not None:
                check_y(y, x.shape[0])
            return self._select_stat(self._stat_part(x, None), k)
        yy, continuous = self._targets(y, x.shape[0])
        if self.method in ("rfe", "lasso"):
            return self._fit_model(x.cpu().numpy(), yy, continuous, k)
        if self.method in ("mutual_info", "entropy"):
            n_bins = self._setup_bins(_strided_rows(x, EDGE_ROWS), x.shape[0], continuous)
            codes = _ops.call("bin_codes", x.float().contiguous(), torch.from_numpy(self.edges_))
            target, n_target = self._y_codes(yy, continuous, n_bins)
            hist = _ops.call("joint_histograms", codes, target, n_target, n_bins).numpy()
            if self.method == "entropy" and x.shape[0] > self.max_rows:  # redundancy measured on a sample
                codes = codes[:, torch.from_numpy(_sample_index(x.shape[0], self.max_rows, self.random_state))]
            return self._select_info(hist, k, codes.contiguous(), n_bins)
        self._check_stat_input(x)
        return self._select_stat(self._stat_part(x, self._y_values(yy, continuous)), k)

    def _setup_bins(self, sample: Tensor, n: int, continuous: bool) -> int:
        """Bin edges of the features (and of a continuous target) from a sample; returns the bin count."""
        n_bins = auto_bins(n) if self.n_bins == "auto" else int(self.n_bins)
        self.edges_ = quantile_edges(sample, n_bins)
        if continuous:  # _y_edges holds the sorted target values until here
            ys = self._y_edges
            self._y_edges = ys[np.minimum(len(ys) - 1, (np.arange(1, n_bins) * len(ys)) // n_bins)]
        return n_bins

    def _check_stat_input(self, x: Tensor) -> None:
        if self.method == "chi2":
            neg = x < 0
            if bool(neg.any()):
                i, j = (int(v) for v in neg.nonzero()[0])
                raise ValueError(f"X: chi2 needs non-negative features; column {j} has {float(x[i, j])} at row {i}")

    def _stat_part(self, x: Tensor, yy: Optional[np.ndarray]) -> Stats:
        """Mergeable sums for the statistic methods (float64)."""
        xd = x.double()
        if self.method == "variance":
            mean = xd.mean(0)
            return {"n": x.shape[0], "mean": mean.numpy(), "m2": ((xd - mean) ** 2).sum(0).numpy()}
        if self.method == "correlation":
            yt = torch.from_numpy(np.asarray(yy, dtype=np.float64))
            mx, my = xd.mean(0), yt.mean()
            xc, yc = xd - mx, yt - my
            return {"n": x.shape[0], "mean": mx.numpy(), "m2": (xc * xc).sum(0).numpy(), "ymean": float(my),
                    "ym2": float((yc * yc).sum()), "cm": (xc * yc[:, None]).sum(0).numpy()}
        onehot = torch.zeros((len(self.classes_), x.shape[0]), dtype=torch.float64)
        onehot[torch.from_numpy(yy), torch.arange(x.shape[0])] = 1.0
        part = {"n": x.shape[0], "count": onehot.sum(1).numpy(), "sum": (onehot @ xd).numpy()}
        if self.method == "f_classif":
            part["sumsq"] = (onehot @ (xd * xd)).numpy()
        return part

    @staticmethod
    def _merge_stat(a: Stats, b: Stats) -> Stats:
        if "mean" not in a:  # class sums
            return {key: a[key] + b[key] for key in a}
        na, nb = a["n"], b["n"]
        n = na + nb
        dx = b["mean"] - a["mean"]
        out = {"n": n, "mean": a["mean"] + dx * nb / n, "m2": a["m2"] + b["m2"] + dx * dx * na * nb / n}
        if "cm" in a:
            dy = b["ymean"] - a["ymean"]
            out.update(ymean=a["ymean"] + dy * nb / n, ym2=a["ym2"] + b["ym2"] + dy * dy * na * nb / n,
                       cm=a["cm"] + b["cm"] + dx * dy * na * nb / n)
        return out

    def _scores(self, s: Stats) -> np.ndarray:
        """Scores from the merged sums, with scikit-learn's formulas."""
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.method == "variance":
                return s["m2"] / s["n"]
            if self.method == "correlation":
                r = s["cm"] / np.sqrt(s["m2"] * s["ym2"])
                return np.abs(np.where(np.isfinite(r), r, 0.0))  # r_regression(force_finite=True)
            count, sums = s["count"], s["sum"]
            if self.method == "chi2":
                expected = (count / count.sum())[:, None] * sums.sum(0)[None, :]
                return ((sums - expected) ** 2 / expected).sum(0)
            n, c = count.sum(), len(count)  # f_oneway, as sklearn.feature_selection.f_classif computes it
            total = sums.sum(0)
            sstot = s["sumsq"].sum(0) - total ** 2 / n
            ssbn = (sums ** 2 / count[:, None]).sum(0) - total ** 2 / n
            return (ssbn / (c - 1)) / ((sstot - ssbn) / (n - c))

    def _select_stat(self, s: Stats, k: int) -> "FeatureSelector":
        self.scores_ = self._scores(s)
        self.support_ = _top_k(self.scores_, k)
        return self

    def _select_info(self, h: np.ndarray, k: int, codes: Tensor, n_bins: int) -> "FeatureSelector":
        """mutual_info: the k largest informations. entropy: the ranking by symmetric uncertainty with the target,
        pruned of features redundant with a better kept one (``codes``: feature-major codes to measure that on)."""
        if self.method == "mutual_info":
            self.scores_ = mutual_information(h)
            self.support_ = _top_k(self.scores_, k)
            return self
        relevance = symmetric_uncertainty(h)
        order = np.argsort(-relevance, kind="stable")
        nb = pair_bins(codes.shape[1], n_bins)  # coarser codes for the feature-feature tables
        coarse = ((codes.to(torch.int32) * nb) // n_bins).to(torch.uint8)
        kept: list = []
        redundant = np.zeros(len(relevance), dtype=bool)
        pending = list(order)
        while pending and len(kept) < k:
            j = pending.pop(0)
            kept.append(j)
            if not pending or len(kept) == k:
                break
            # drop the pending features that j (ranked higher) makes redundant: SU(f, j) >= SU(f, y)
            cand = torch.tensor(pending, dtype=torch.long)
            pair = _ops.call("joint_histograms", coarse[cand].contiguous(), coarse[j].to(torch.int32).contiguous(),
                             nb, nb).numpy()
            drop = symmetric_uncertainty(pair) >= relevance[pending]
            redundant[np.asarray(pending)[drop]] = True
            pending = [f for f, dr in zip(pending, drop) if not dr]
        taken = set(kept)
        fill = [f for f in order if f not in taken][:k - len(kept)]
        self.scores_ = relevance
        self.redundant_ = redundant
        self.support_ = np.zeros(len(relevance), dtype=bool)
        self.support_[kept + fill] = True
        return self

    def _fit_stream(self, X: Any, y: Any) -> "FeatureSelector":
        src = Source(X, y, self.chunk_rows)
        head = src.peek(lambda got: sum(len(c[0]) for c in got) >= self.max_rows)
        if not head:
            raise ValueError("X: no rows (the chunk source was empty)")
        xs = torch.cat([check_X(self, c, reset=i == 0)[0].cpu() for i, (c, _) in enumerate(head)])[:self.max_rows]
        k = self._check_k(xs.shape[1])
        continuous = False
        if self.method != "variance":  # the labels: all of them when y is an array, else those read so far
            ys = None if head[0][1] is None else np.concatenate([check_y(c[1], len(c[0])) for c in head])
            y_seen = ys if y is None else (y.compute() if is_dask(y) else y)
            _, continuous = self._targets(y_seen, len(y_seen))
        source, labels = (X, y) if src.reiterable else (src, None)
        if self.method in ("mutual_info", "entropy"):
            n_bins = self._setup_bins(_strided_rows(xs, EDGE_ROWS), src.n_rows or len(xs),
                                      continuous)
            edges = torch.from_numpy(self.edges_)

            def hist(xc: Any, yc: Any) -> np.ndarray:
                x = check_X(self, xc, reset=False)[0].cpu()
                target, n_target = self._y_codes(check_y(yc, x.shape[0]), continuous, n_bins)
                return _ops.call("joint_histograms", _ops.call("bin_codes", x.float().contiguous(), edges), target,
                                 n_target, n_bins).numpy()

            h = map_reduce(hist, np.add, source, labels, self.chunk_rows)
            self.n_features_in_ = xs.shape[1]
            return self._select_info(h, k, _ops.call("bin_codes", xs.float().contiguous(), edges), n_bins)

        def part(xc: Any, yc: Any) -> Stats:
            x = check_X(self, xc, reset=False)[0].cpu()
            self._check_stat_input(x)
            yy = None if self.method == "variance" else self._y_values(check_y(yc, x.shape[0]), continuous)
            return self._stat_part(x, yy)

        stats = map_reduce(part, self._merge_stat, source, labels, self.chunk_rows)
        self.n_features_in_ = xs.shape[1]
        return self._select_stat(stats, k)

    def _fit_model(self, x: np.ndarray, y: np.ndarray, continuous: bool, k: int) -> "FeatureSelector":
        from sklearn.base import clone
        from sklearn.feature_selection import RFE, SelectFromModel
        from sklearn.linear_model import Lasso, LogisticRegression, Ridge, RidgeClassifier

        if self.method == "rfe":
            est = clone(self.estimator) if self.estimator is not None else (
                Ridge() if continuous else RidgeClassifier())
            rfe = RFE(est, n_features_to_select=k).fit(x, y)
            self.support_, self.ranking_ = rfe.support_, rfe.ranking_
            self.scores_ = 1.0 / rfe.ranking_
            return self
        est = clone(self.estimator) if self.estimator is not None else (
            Lasso(alpha=0.01) if continuous else LogisticRegression(l1_ratio=1.0, C=0.1, solver="saga",
                                                                    max_iter=2000, random_state=self.random_state))
        sfm = SelectFromModel(est, max_features=k, threshold=-np.inf).fit(x, y)
        self.support_ = sfm.get_support()
        coef = np.asarray(sfm.estimator_.coef_)
        self.scores_ = np.abs(coef) if coef.ndim == 1 else np.linalg.norm(coef, ord=1, axis=0)
        return self

    # --- selecting -----------------------------------------------------------------------------------------

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "support_")
        return self.support_

    def transform(self, X: Any) -> Any:
        """The selected columns of X (X's kind; chunked sources give a generator, Dask arrays a Dask array)."""
        check_is_fitted(self, "support_")
        cols = int(self.support_.sum())
        out = self._transform_any(X, self.transform, cols, getattr(X, "dtype", np.float64), self.chunk_rows)
        if out is not None:
            return out
        if isinstance(X, Tensor):
            t, _ = check_X(self, X, reset=False, finite=False, dtype=(np.float32, np.float64))
            return t[:, torch.from_numpy(np.nonzero(self.support_)[0]).to(t.device)]
        return super().transform(X)

    def inverse_transform(self, X: Any) -> Any:
        """X's columns put back at the selected positions, zeros elsewhere."""
        if isinstance(X, Tensor):
            check_is_fitted(self, "support_")
            out = X.new_zeros((X.shape[0], len(self.support_)))
            out[:, torch.from_numpy(np.nonzero(self.support_)[0]).to(X.device)] = X
            return out
        return super().inverse_transform(X)


def _sample_index(n: int, m: int, seed: Optional[int]) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, m, replace=False))


def _strided_rows(x: Tensor, m: int) -> Tensor:
    """Every s-th row of x, s the smallest step that leaves at most m rows (a view: no gather)."""
    return x[::-(-x.shape[0] // m)] if x.shape[0] > m else x


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Mask of the k best scores (NaN counts as the worst; ties keep the earlier feature)."""
    clean = np.where(np.isnan(scores), -np.inf, scores)
    mask = np.zeros(len(scores), dtype=bool)
    mask[np.argsort(-clean, kind="stable")[:k]] = True
    return mask
