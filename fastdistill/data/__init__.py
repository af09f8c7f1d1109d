"""Data compression, the first pillar of distillation: fewer dimensions, samples, features and bits before a small
model trains or a device receives the data. Every class is a scikit-learn transformer (``fit`` / ``transform`` /
``inverse_transform``, ``get_params``, works in ``Pipeline`` and ``clone``); numpy in -> numpy out, torch in ->
torch out; ``save`` / ``load`` in the library's pickle-free format. Chunked inputs (``np.memmap``, ``.npy`` paths,
iterables of chunks) stream in bounded memory, and Dask arrays (optional) fit from per-block statistics.

* :class:`PCACompressor` - principal components (a variance fraction or a count).
* :class:`ClusterCompressor` - a k-means coreset (centroids, labels, member counts).
* :class:`FeatureSelector` - mutual information, entropy, correlation, chi2, f_classif, variance, RFE, LASSO.
* :class:`DataQuantizer` - 8-bit (or narrower) codes: asymmetric, symmetric, mean, log, gradient.
* :func:`compress_dataset` - a chain of them, with bytes, errors and a reference classifier's accuracy.

Example::

    >>> from fastdistill.data import compress_dataset
    >>> out = compress_dataset(X, y, ["pca:0.95", "quantize:8"])
    >>> out.report["ratio"], out.report["accuracy"]
"""
from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use (scikit-learn comes with them): `import fastdistill.data` itself stays light.
_WHERE = {
    "bin_codes": "select",
    "ClusterCompressor": "cluster",
    "compress_dataset": "pipeline",
    "CompressedData": "pipeline",
    "DataQuantizer": "quantize",
    "FeatureSelector": "select",
    "joint_histograms": "select",
    "kmeans_assign": "cluster",
    "load": "_persist",
    "mutual_information": "select",
    "parse_step": "pipeline",
    "PCACompressor": "pca",
    "save": "_persist",
}
__all__ = sorted(_WHERE, key=str.lower)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'fastdistill.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_WHERE))
