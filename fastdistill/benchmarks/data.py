"""Data-compression benchmarks against scikit-learn: nearest-centroid assignment (KMeans.predict), mutual-information
feature selection (mutual_info_classif) and 8-bit data quantization (KBinsDiscretizer), with their floors."""
from __future__ import annotations

import warnings
from typing import Iterator, Tuple

import numpy as np
import torch

from ..bench import Row, compare, suite

ASSIGN = (1_000_000, 64, 256)  # rows, features, centroids
MI = (20000, 64, 12)  # make_classification(n_samples, n_features, n_informative)
QUANT = (1_000_000, 64)


def assign_case(quick: bool) -> Tuple[np.ndarray, np.ndarray, object]:
    """X, centroids and a KMeans whose predict() uses those centroids (the peer)."""
    from sklearn.cluster import KMeans

    n, d, k = ASSIGN
    n = n // 5 if quick else n
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d), dtype=np.float32)
    C = rng.standard_normal((k, d), dtype=np.float32)
    km = KMeans(k, init=C, n_init=1, max_iter=1).fit(X[: 4 * k])
    km.cluster_centers_ = C.copy()
    return X, C, km


def torch_assign(x: torch.Tensor, c: torch.Tensor, rows: int = 65536) -> torch.Tensor:
    """Nearest centroids in eager torch, the GEMM form in row chunks (what users write without a kernel)."""
    cn = (c * c).sum(1)
    return torch.cat([(cn - 2.0 * (x[i:i + rows] @ c.T)).argmin(1) for i in range(0, len(x), rows)])


def mi_case() -> Tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    n, d, informative = MI
    X, y = make_classification(n, d, n_informative=informative, random_state=0)
    return X.astype(np.float32), y


def top_overlap(k: int = MI[2]) -> int:
    """How many of mutual_info_classif's top-k features the mutual_info selector also keeps."""
    from sklearn.feature_selection import mutual_info_classif

    from ..data import FeatureSelector

    X, y = mi_case()
    theirs = set(np.argsort(-mutual_info_classif(X, y, random_state=0))[:k])
    return len(theirs & set(FeatureSelector("mutual_info", k).fit(X, y).get_support(indices=True)))


@suite("data")
def data_suite(quick: bool) -> Iterator[Row]:
    from sklearn.feature_selection import mutual_info_classif
    from sklearn.preprocessing import KBinsDiscretizer

    from ..data import DataQuantizer, FeatureSelector, kmeans_assign

    X, C, km = assign_case(quick)
    xt, ct = torch.from_numpy(X), torch.from_numpy(C)
    case = f"nearest centroid {len(X)}x{X.shape[1]}, {len(C)} centroids"
    rep = 5 if quick else 9
    yield compare("data", case, lambda: kmeans_assign(X, C), lambda: km.predict(X), ours_name="kmeans_assign",
                  peer_name="KMeans.predict", target=">=2x peer", repeat=rep)
    yield compare("data", case, lambda: kmeans_assign(xt, ct), lambda: torch_assign(xt, ct),
                  ours_name="kmeans_assign", peer_name="torch GEMM form + argmin (64k-row chunks)", repeat=rep)

    Xm, ym = mi_case()
    sel = FeatureSelector("mutual_info", MI[2])
    overlap = top_overlap()
    yield compare("data", f"mutual information {Xm.shape[0]}x{Xm.shape[1]} (top-{MI[2]} shared: {overlap})",
                  lambda: sel.fit(Xm, ym), lambda: mutual_info_classif(Xm, ym, random_state=0),
                  ours_name="FeatureSelector(mutual_info).fit", peer_name="mutual_info_classif",
                  target=">=100x peer, >=10 shared", repeat=3)

    n, d = QUANT
    n = n // 5 if quick else n
    Xq = np.random.default_rng(1).standard_normal((n, d), dtype=np.float32)
    q = DataQuantizer(8).fit(Xq)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kb = KBinsDiscretizer(256, encode="ordinal", strategy="uniform", subsample=None).fit(Xq)
    copy = np.empty_like(Xq)
    label = f"8-bit quantize {n}x{d} fp32"
    yield compare("data", label, lambda: q.transform(Xq), lambda: kb.transform(Xq),
                  ours_name="DataQuantizer.transform", peer_name="KBinsDiscretizer(ordinal).transform",
                  floor=lambda: np.copyto(copy, Xq), floor_name="np.copyto (one read+write pass)",
                  target=">=10x peer, <=2x floor", repeat=3 if quick else 7)
    codes = q.transform(Xq)
    yield compare("data", label, lambda: q.inverse_transform(codes), lambda: kb.inverse_transform(
        codes.astype(np.float64)), ours_name="DataQuantizer.inverse_transform",
        peer_name="KBinsDiscretizer.inverse_transform", floor=lambda: np.copyto(copy, Xq),
        floor_name="np.copyto (one read+write pass)", repeat=3 if quick else 7)
    if not quick:
        def kbins_fit_transform():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return KBinsDiscretizer(256, encode="ordinal", strategy="uniform", subsample=None).fit_transform(Xq)

        yield compare("data", label, lambda: DataQuantizer(8).fit_transform(Xq), kbins_fit_transform,
                      ours_name="DataQuantizer.fit_transform", peer_name="KBinsDiscretizer.fit_transform",
                      repeat=3)
