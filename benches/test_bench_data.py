"""pytest-benchmark suite for data compression: ours and the scikit-learn peers as separate benchmarks of one group
per case (nearest-centroid assignment, mutual-information selection, 8-bit data quantization).

Run: ``pytest benches/test_bench_data.py --benchmark-only`` (the ratios of ``fastdistill bench data`` come from the
same cases). The 4 GB bounded-memory run is ``python benches/data_stream_4gb.py``."""
import warnings

import numpy as np
import pytest
import torch

from fastdistill.benchmarks.data import QUANT, assign_case, mi_case, torch_assign
from fastdistill.data import DataQuantizer, FeatureSelector, kmeans_assign

ASSIGN = "nearest centroid 1M x 64, 256 centroids"
MI = "mutual information 20000 x 64"
QUANTIZE = "8-bit quantize 1M x 64 fp32"


@pytest.fixture(scope="module")
def assign():
    return assign_case(quick=False)


@pytest.fixture(scope="module")
def quant():
    from sklearn.preprocessing import KBinsDiscretizer

    X = np.random.default_rng(1).standard_normal(QUANT, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kb = KBinsDiscretizer(256, encode="ordinal", strategy="uniform", subsample=None).fit(X)
    return X, DataQuantizer(8).fit(X), kb


@pytest.mark.benchmark(group=ASSIGN)
def test_fastdistill_kmeans_assign(benchmark, assign):
    X, C, _ = assign
    benchmark(kmeans_assign, X, C)


@pytest.mark.benchmark(group=ASSIGN)
def test_sklearn_kmeans_predict(benchmark, assign):
    X, _, km = assign
    benchmark.pedantic(km.predict, args=(X,), rounds=3)


@pytest.mark.benchmark(group=ASSIGN)
def test_torch_gemm_form(benchmark, assign):
    X, C, _ = assign
    benchmark(torch_assign, torch.from_numpy(X), torch.from_numpy(C))


@pytest.mark.benchmark(group=MI)
def test_fastdistill_mutual_info(benchmark):
    X, y = mi_case()
    sel = FeatureSelector("mutual_info", 12)
    benchmark(sel.fit, X, y)


@pytest.mark.benchmark(group=MI)
def test_sklearn_mutual_info_classif(benchmark):
    from sklearn.feature_selection import mutual_info_classif

    X, y = mi_case()
    benchmark.pedantic(mutual_info_classif, args=(X, y), kwargs={"random_state": 0}, rounds=2)


@pytest.mark.benchmark(group=QUANTIZE)
def test_fastdistill_quantizer(benchmark, quant):
    X, q, _ = quant
    benchmark(q.transform, X)


@pytest.mark.benchmark(group=QUANTIZE)
def test_sklearn_kbins(benchmark, quant):
    X, _, kb = quant
    benchmark.pedantic(kb.transform, args=(X,), rounds=3)


@pytest.mark.benchmark(group=QUANTIZE)
def test_floor_copy(benchmark, quant):
    X = quant[0]
    out = np.empty_like(X)
    benchmark(np.copyto, out, X)
