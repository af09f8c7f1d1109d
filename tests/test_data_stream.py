"""Larger-than-memory inputs of fastdistill.data: np.memmap, .npy paths, lists and one-pass iterators of chunks,
partial_fit, and Dask arrays on a local 2-worker cluster; each gives the in-memory result. (The 4 GB bounded-memory
run is a benchmark: benches/data_stream.py.)"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification

from fastdistill.data import ClusterCompressor, DataQuantizer, FeatureSelector, PCACompressor
from fastdistill.data._arrays import Chunks


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(3000, 16, n_informative=6, n_classes=3, random_state=0)
    X = X.astype(np.float32)
    X[:, 3] = np.abs(X[:, 3])  # a non-negative column (chi2 below uses the non-negative part)
    return X, y


@pytest.fixture
def npy(tmp_path, data):
    X, _ = data
    path = tmp_path / "x.npy"
    np.save(path, X)
    return path


def sources(X, y, path):
    """The same rows as: a read-only memmap, a .npy path, a list of (X, y) chunks, a one-pass generator."""
    cuts = [0, 7, 1000, 1001, 2500, len(X)]
    pairs = [(X[a:b], y[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    return [("memmap", np.load(path, mmap_mode="r"), y), ("path", str(path), y), ("list", pairs, None),
            ("generator", (p for p in pairs), None)]


def test_chunks_read_files_in_bounded_pieces(npy, data):
    X, _ = data
    mm = np.load(npy, mmap_mode="r")
    parts = list(Chunks(mm, chunk_rows=700))
    assert [len(p) for p, _ in parts] == [700, 700, 700, 700, 200]
    assert all(type(p) is np.ndarray and p.flags.owndata for p, _ in parts)  # file reads, not views of the map
    np.testing.assert_array_equal(np.concatenate([p for p, _ in parts]), X)
    truncated = npy.parent / "t.npy"
    truncated.write_bytes(npy.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        list(Chunks(str(truncated)))
    np.save(npy.parent / "f.npy", np.asfortranarray(X))
    with pytest.raises(ValueError, match="Fortran"):
        Chunks(str(npy.parent / "f.npy"))
    with pytest.raises(ValueError, match="labels inside the chunks"):
        Chunks([X[:10]], y=np.zeros(10))


def test_pca_streams(npy, data):
    X, y = data
    ref = PCACompressor(0.9, solver="covariance_eigh").fit(X)
    for name, src, yy in sources(X, y, npy):
        p = PCACompressor(0.9, chunk_rows=500).fit(src)
        assert p.n_components_ == ref.n_components_ and p.n_samples_seen_ == len(X), name
        np.testing.assert_allclose(p.components_, ref.components_, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(p.mean_, ref.mean_, atol=1e-6)
    out = ref.transform(np.load(npy, mmap_mode="r"))
    np.testing.assert_allclose(out, ref.transform(X), rtol=1e-6)
    chunks = list(ref.transform([X[:100], X[100:]]))
    assert len(chunks) == 2 and chunks[0].shape == (100, ref.n_components_)


@pytest.mark.parametrize("scheme", ["asymmetric", "log", "gradient"])
def test_quantizer_streams(npy, data, scheme):
    X, y = data
    ref = DataQuantizer(8, scheme, block=16).fit(X)
    want = ref.transform(X)
    for name, src, _ in sources(X, y, npy):
        if name == "generator":
            src = (c for c, _ in src)
        elif name == "list":
            src = [c for c, _ in src]
        q = DataQuantizer(8, scheme, block=16, chunk_rows=400).fit(src)
        np.testing.assert_array_equal(q.scale_, ref.scale_, err_msg=name)
        np.testing.assert_array_equal(q.offset_, ref.offset_, err_msg=name)
    np.testing.assert_array_equal(ref.transform(np.load(npy, mmap_mode="r")), want)
    irregular = [X[:5], X[5:37], X[37:2000], X[2000:]]  # gradient codes regroup these into whole anchor blocks
    np.testing.assert_array_equal(np.concatenate(list(ref.transform(iter(irregular)))), want)


@pytest.mark.parametrize("method", ["f_classif", "chi2", "variance", "correlation", "mutual_info", "entropy"])
def test_selector_streams(npy, data, method):
    X, y = data
    Xn = np.abs(X) if method == "chi2" else X
    path = npy.parent / "xn.npy"
    np.save(path, Xn)
    ref = FeatureSelector(method, 5).fit(Xn, y)
    for name, src, yy in sources(Xn, y, path):
        sel = FeatureSelector(method, 5, chunk_rows=600).fit(src, yy)
        np.testing.assert_allclose(sel.scores_, ref.scores_, rtol=1e-9, atol=1e-12, err_msg=name)
        np.testing.assert_array_equal(sel.get_support(), ref.get_support(), err_msg=name)
    with pytest.raises(ValueError, match="needs X in memory"):
        FeatureSelector("rfe", 3).fit(str(path), y)


def test_clusters_stream(npy, data):
    X, y = data
    ref = ClusterCompressor(30, random_state=0).fit(X, y)
    mm = ClusterCompressor(30, random_state=0, chunk_rows=700).fit(np.load(npy, mmap_mode="r"), y)
    np.testing.assert_allclose(mm.cluster_centers_, ref.cluster_centers_, atol=1e-4)
    np.testing.assert_array_equal(mm.counts_, ref.counts_)
    np.testing.assert_array_equal(mm.centroid_labels_, ref.centroid_labels_)
    for name, src, yy in sources(X, y, npy):
        mb = ClusterCompressor(30, method="minibatch", batch_size=256, random_state=0, chunk_rows=700).fit(src, yy)
        assert mb.counts_.sum() == len(X) and set(mb.centroid_labels_) == set(np.unique(y)), name
        assert mb.inertia_ < 1.5 * ref.inertia_, name
    labels = ref.predict(np.load(npy, mmap_mode="r"))
    np.testing.assert_array_equal(labels, ref.predict(X))


# ------------------------------------------------------------------------------------------------ Dask


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        yield client


def test_dask_cluster_gives_the_numpy_result(dask_client, data):
    import dask.array as da

    X, y = data
    dX = da.from_array(X, chunks=(700, 8))  # column chunks too: merged before the blocks are used
    dy = da.from_array(y, chunks=(700,))
    p, ref = PCACompressor(0.9).fit(dX), PCACompressor(0.9, solver="covariance_eigh").fit(X)
    np.testing.assert_allclose(p.components_, ref.components_, atol=1e-5)
    np.testing.assert_allclose(p.transform(dX).compute(), ref.transform(X), rtol=1e-5, atol=1e-5)
    q, qref = DataQuantizer(8).fit(dX), DataQuantizer(8).fit(X)
    np.testing.assert_array_equal(q.scale_, qref.scale_)
    np.testing.assert_array_equal(q.transform(dX).compute(), qref.transform(X))
    g = DataQuantizer(8, "gradient", block=64).fit(dX)
    np.testing.assert_array_equal(g.transform(dX).compute(), DataQuantizer(8, "gradient", block=64).fit(X)
                                  .transform(X))
    s, sref = FeatureSelector("f_classif", 5).fit(dX, dy), FeatureSelector("f_classif", 5).fit(X, y)
    np.testing.assert_allclose(s.scores_, sref.scores_, rtol=1e-9)
    np.testing.assert_array_equal(s.transform(dX).compute(), sref.transform(X))
    c = ClusterCompressor(30, max_iter=4, random_state=0).fit(dX, dy)  # (each Lloyd step is one Dask round trip)
    cref = ClusterCompressor(30, max_iter=4, random_state=0).fit(X, y)
    np.testing.assert_allclose(c.cluster_centers_, cref.cluster_centers_, atol=1e-4)
    np.testing.assert_array_equal(c.predict(dX).compute(), cref.predict(X))
