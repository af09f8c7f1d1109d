"""The acceptance figures of fastdistill.data on scikit-learn's digits, printed as markdown: PCA to 95% variance +
8-bit codes (size and the reference classifier's accuracy against the original data), a 10% k-means coreset, and
each feature selector against scikit-learn's own result where it has one.

Run: ``python benches/data_acceptance.py`` (about a minute)."""
from __future__ import annotations

import warnings

import numpy as np
from sklearn import feature_selection as fs
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression, RidgeClassifier

from fastdistill.data import FeatureSelector, compress_dataset

K = 20


def main() -> None:
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    print("| steps (digits, float32 in) | bytes before -> after | ratio | accuracy original | compressed | diff |")
    print("|---|---|---|---|---|---|")
    for steps in (["pca:0.95", "quantize:8"], ["clusters:0.1"], ["quantize:8"], ["select:mutual_info:32", "quantize:8"],
                  ["pca:0.95", "clusters:0.1", "quantize:8"]):
        out = compress_dataset(X, y, steps)
        r, a = out.report, out.report["accuracy"]
        print(f"| {' + '.join(steps)} | {r['bytes_before']:,} -> {r['bytes_after']:,} (+{r['model_bytes']:,} model) "
              f"| {r['ratio']:.1f}x | {a['original']:.4f} | {a['compressed']:.4f} | {100 * a['difference']:+.2f} pt |")
    print()
    print(f"| selector (k = {K}) | scikit-learn counterpart | same {K} features |")
    print("|---|---|---|")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = {
            "chi2": ("SelectKBest(chi2)", fs.SelectKBest(fs.chi2, k=K).fit(X, y).get_support()),
            "f_classif": ("SelectKBest(f_classif)", fs.SelectKBest(fs.f_classif, k=K).fit(X, y).get_support()),
            "variance": ("top-k of VarianceThreshold's np.var", _top(X.var(0), K)),
            "correlation": ("top-k of abs(r_regression)", _top(np.abs(np.nan_to_num(fs.r_regression(X, y))), K)),
            "mutual_info": ("top-k of mutual_info_classif", _top(fs.mutual_info_classif(X, y, random_state=0), K)),
            "rfe": ("RFE(RidgeClassifier())", fs.RFE(RidgeClassifier(), n_features_to_select=K).fit(X, y).support_),
            "lasso": ("SelectFromModel(L1 logistic, max_features=k)", fs.SelectFromModel(
                LogisticRegression(l1_ratio=1.0, C=0.1, solver="saga", max_iter=2000, random_state=0),
                max_features=K, threshold=-np.inf).fit(X, y).get_support()),
            "entropy": ("(none: FCBF-style pruning)", None),
        }
        for method, (name, support) in theirs.items():
            ours = FeatureSelector(method, K).fit(X, y).get_support()
            same = "-" if support is None else f"{int((ours & support).sum())}/{K}"
            print(f"| {method} | {name} | {same} |")


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    mask = np.zeros(len(scores), dtype=bool)
    mask[np.argsort(-scores, kind="stable")[:k]] = True
    return mask


if __name__ == "__main__":
    main()
