"""PCA compression: keep the principal components that explain a fraction of the variance (or a fixed count)."""
from __future__ import annotations

import numbers
from typing import Any, Optional, Tuple, Union

import numpy as np
import torch
from sklearn.base import TransformerMixin
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from ._arrays import ArrayLike, check_X, is_chunked, is_dask, to_kind
from ._base import DataCompressor, Stats, as_like, map_reduce, merge_moments, moments

SOLVERS = ("auto", "full", "covariance_eigh", "randomized")


def _svd_flip_rows(v: np.ndarray) -> np.ndarray:
    """Signs of the components fixed as scikit-learn fixes them (``svd_flip(u_based_decision=False)``): the
    largest-magnitude entry of each component is positive."""
    signs = np.sign(v[np.arange(v.shape[0]), np.argmax(np.abs(v), axis=1)])
    signs[signs == 0] = 1.0
    return v * signs[:, None]


class PCACompressor(TransformerMixin, DataCompressor):
    """Principal component analysis that keeps a variance fraction or a fixed number of components.

    Same components as :class:`sklearn.decomposition.PCA` (up to sign, with scikit-learn's sign convention) and the
    same ``"auto"`` choice of solver: the covariance eigendecomposition for tall data (``n >= 10 d``, ``d <= 1000``),
    randomized SVD for a small integer ``n_components`` of a large matrix, a full SVD otherwise. Chunked inputs (a
    ``.npy`` path, an ``np.memmap``, an iterable of chunks), :meth:`partial_fit` and Dask arrays accumulate the
    mean and the scatter matrix chunk by chunk (float64, Chan's parallel update) and solve the covariance
    eigenproblem: bounded memory, one pass.

    Parameters
    ----------
    n_components : float in (0, 1) or int
        A float keeps the fewest components whose explained variance reaches that fraction; an int keeps that many.
    whiten : bool
        Scale the projections to unit variance.
    solver : {"auto", "full", "covariance_eigh", "randomized"}
    random_state : int or None
        Seed of the randomized solver.
    chunk_rows : int or None
        Rows per chunk when streaming (default: about 64 MiB of input).

    Attributes: ``components_`` (k, d), ``mean_``, ``explained_variance_``, ``explained_variance_ratio_``,
    ``singular_values_``, ``n_components_``, ``n_samples_seen_``, ``n_features_in_``.

    Example::

        >>> from fastdistill.data import PCACompressor
        >>> pca = PCACompressor(0.95).fit(X)          # numpy or torch, in memory or a np.memmap
        >>> Z = pca.transform(X)                       # (n, pca.n_components_)
        >>> pca.save("pca.fd"); PCACompressor.load("pca.fd")
    """

    _persist = ("components_", "mean_", "explained_variance_", "explained_variance_ratio_", "singular_values_",
                "n_components_", "n_samples_seen_", "n_features_in_", "_scatter", "_solver")

    def __init__(self, n_components: Union[float, int] = 0.95, *, whiten: bool = False, solver: str = "auto",
                 random_state: Optional[int] = None, chunk_rows: Optional[int] = None):
        self.n_components = n_components
        self.whiten = whiten
        self.solver = solver
        self.random_state = random_state
        self.chunk_rows = chunk_rows

    # --- fitting -------------------------------------------------------------------------------------------

    def _check_params(self) -> None:
        k = self.n_components
        if isinstance(k, bool) or not isinstance(k, numbers.Real):
            raise TypeError(f"n_components: expected a float in (0, 1) or a positive int, got {k!r}")
        if isinstance(k, numbers.Integral):
            if k < 1:
                raise ValueError(f"n_components: expected a positive count, got {k}")
        elif not 0.0 < k < 1.0:
            raise ValueError(f"n_components: expected a variance fraction in (0, 1) or an int, got {k}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver: expected one of {SOLVERS}, got {self.solver!r}")

    def fit(self, X: Any, y: Any = None) -> "PCACompressor":
        """Fits the components to X (array, tensor, ``np.memmap``, ``.npy`` path, iterable of chunks or Dask
        array). ``y`` is ignored."""
        self._check_params()
        if is_dask(X) or is_chunked(X):
            for attr in ("n_features_in_", "_scatter"):
                self.__dict__.pop(attr, None)
            stats = map_reduce(self._block_stats, merge_moments, X, chunk_rows=self.chunk_rows)
            if not hasattr(self, "n_features_in_"):  # (Dask blocks were checked on the workers)
                self.n_features_in_ = len(stats["mean"])
            return self._solve_covariance(stats)
        t, _ = check_X(self, X, reset=True)
        self._scatter = None
        solver = self._auto_solver(*t.shape)
        if solver == "covariance_eigh":
            return self._solve_covariance(moments(t, scatter=True))
        return self._solve_svd(t.double().cpu().numpy(), solver)

    def partial_fit(self, X: ArrayLike, y: Any = None) -> "PCACompressor":
        """Adds the rows of X to the running mean and scatter matrix and re-solves (an O(d^3) eigendecomposition
        per call: for many small batches of wide data, prefer :meth:`fit` on a chunked source)."""
        self._check_params()
        first = getattr(self, "_scatter", None) is None
        t, _ = check_X(self, X, reset=first)
        stats = moments(t, scatter=True)
        if not first:
            stats = merge_moments(self._scatter, stats)
        return self._solve_covariance(stats)

    def _block_stats(self, xc: Any, yc: Any) -> Stats:
        return moments(self._chunk_input(xc, first=not hasattr(self, "n_features_in_")), scatter=True)

    def _auto_solver(self, n: int, d: int) -> str:
        if self.solver != "auto":
            return self.solver
        if d <= 1000 and n >= 10 * d:
            return "covariance_eigh"
        if max(n, d) <= 500:
            return "full"
        k = self.n_components
        if isinstance(k, numbers.Integral) and 1 <= k < 0.8 * min(n, d):
            return "randomized"
        return "full"

    def _n_kept(self, ratio: np.ndarray, limit: int) -> int:
        k = self.n_components
        if isinstance(k, numbers.Integral):
            if k > limit:
                raise ValueError(f"n_components: {k} is more than min(n_samples, n_features) = {limit}")
            return int(k)
        return int(min(np.searchsorted(np.cumsum(ratio), k, side="right") + 1, len(ratio)))

    def _set(self, components: np.ndarray, variance: np.ndarray, total: float, mean: np.ndarray, n: int,
             solver: str) -> "PCACompressor":
        self.components_ = components
        self.explained_variance_ = variance
        self.explained_variance_ratio_ = variance / total if total > 0 else np.zeros_like(variance)
        self.singular_values_ = np.sqrt(np.maximum(variance, 0.0) * max(n - 1, 1))
        self.mean_ = mean
        self.n_components_ = len(components)
        self.n_samples_seen_ = n
        self._solver = solver
        return self

    def _solve_covariance(self, stats: Stats) -> "PCACompressor":
        n = int(stats["n"])
        if n < 2:
            raise ValueError(f"X: PCA needs at least 2 samples, got n_samples={n}")
        cov = stats["m2"] / (n - 1)
        w, v = np.linalg.eigh(cov)
        order = np.argsort(w)[::-1]
        w, v = np.maximum(w[order], 0.0), v[:, order].T
        self._scatter = stats
        k = self._n_kept(w / max(w.sum(), np.finfo(float).tiny), min(n, len(w)))
        return self._set(_svd_flip_rows(v[:k]), w[:k], float(w.sum()), stats["mean"], n, "covariance_eigh")

    def _solve_svd(self, x: np.ndarray, solver: str) -> "PCACompressor":
        n, d = x.shape
        if n < 2:
            raise ValueError(f"X: PCA needs at least 2 samples, got n_samples={n}")
        mean = x.mean(0)
        xc = x - mean
        total = float((xc * xc).sum() / (n - 1))
        if solver == "randomized":
            from sklearn.utils.extmath import randomized_svd

            k = self._n_kept(np.empty(0), min(n, d))
            _, s, vt = randomized_svd(xc, k, n_iter="auto", flip_sign=False, random_state=self.random_state)
        else:
            _, s, vt = np.linalg.svd(xc, full_matrices=False)
            k = self._n_kept(s * s / max(float((s * s).sum()), np.finfo(float).tiny), min(n, d))
            s, vt = s[:k], vt[:k]
        return self._set(_svd_flip_rows(vt), s * s / (n - 1), total, mean, n, solver)

    # --- transforming --------------------------------------------------------------------------------------

    def transform(self, X: Any) -> Any:
        """Projections onto the components, (n, n_components_); X's kind and float dtype (chunked sources give
        chunks, Dask arrays a Dask array)."""
        check_is_fitted(self, "components_")
        dtype = getattr(X, "dtype", None)
        out = self._transform_any(X, self.transform, self.n_components_,
                                  dtype if dtype in (np.float32, np.float64) else np.float32, self.chunk_rows)
        if out is not None:
            return out
        t, torch_out = check_X(self, X, reset=False)
        comp = as_like(self.components_, t)
        z = (t - as_like(self.mean_, t)) @ comp.T
        if self.whiten:
            z = z / torch.sqrt(as_like(self.explained_variance_, t).clamp_min(np.finfo(np.float32).tiny))
        return to_kind(z, torch_out)

    def inverse_transform(self, Z: Any) -> Any:
        """Back to the feature space: ``Z @ components_ + mean_`` (whitening undone)."""
        check_is_fitted(self, "components_")
        z, torch_out = _as_projection(Z, self.n_components_)
        if self.whiten:
            z = z * torch.sqrt(as_like(self.explained_variance_, z))
        return to_kind(z @ as_like(self.components_, z) + as_like(self.mean_, z), torch_out)

    def bytes_per_sample(self, itemsize: int = 4) -> Tuple[int, int]:
        """(bytes of one input sample, bytes of its projection) at ``itemsize`` bytes per value."""
        check_is_fitted(self, "components_")
        return self.n_features_in_ * itemsize, self.n_components_ * itemsize

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _as_projection(Z: Any, k: int) -> Tuple[Tensor, bool]:
    if isinstance(Z, Tensor):
        z, torch_in = Z.detach(), True
    else:
        a = np.asarray(Z)
        z, torch_in = torch.from_numpy(np.ascontiguousarray(a if a.dtype in (np.float32, np.float64)
                                                            else a.astype(np.float64))), False
    if z.dim() != 2 or z.shape[1] != k:
        raise ValueError(f"X: expected projections of shape (n, {k}), got {tuple(z.shape)}")
    if not z.is_floating_point():
        z = z.double()
    return z, torch_in
