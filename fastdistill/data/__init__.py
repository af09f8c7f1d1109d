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
from ._persist import load, save
from .cluster import ClusterCompressor, kmeans_assign
from .pca import PCACompressor
from .pipeline import CompressedData, compress_dataset, parse_step
from .quantize import DataQuantizer
from .select import FeatureSelector, bin_codes, joint_histograms, mutual_information

__all__ = [
    "bin_codes",
    "ClusterCompressor",
    "compress_dataset",
    "CompressedData",
    "DataQuantizer",
    "FeatureSelector",
    "joint_histograms",
    "kmeans_assign",
    "load",
    "mutual_information",
    "parse_step",
    "PCACompressor",
    "save",
]
