"""fastdistill.data estimators: scikit-learn conventions (check_estimator, clone, Pipeline), numpy in -> numpy out
and torch in -> torch out, agreement with scikit-learn's PCA and selectors, the quantizer schemes, the coreset,
save/load, the errors, and the acceptance figures on digits."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits, make_classification, make_regression
from sklearn.pipeline import Pipeline

from fastdistill import data as fdd
from fastdistill.data import (ClusterCompressor, DataQuantizer, FeatureSelector, PCACompressor, compress_dataset)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def blobs():
    X, y = make_classification(600, 12, n_informative=5, n_redundant=2, n_classes=3, random_state=0)
    return X.astype(np.float32), y


# ------------------------------------------------------------------------------------------------ conventions

CHECKED = [PCACompressor(2), PCACompressor(0.9, solver="full"), DataQuantizer(), DataQuantizer(6, "log"),
           DataQuantizer(8, "gradient", block=4), ClusterCompressor(3, per_class=False, random_state=0),
           FeatureSelector("variance", 1), FeatureSelector("f_classif", 1), FeatureSelector("mutual_info", 1)]


# Delta codes along the rows treat the rows as a sequence: their order (and which rows are sent together) is data.
ORDER_MATTERS = {"check_methods_sample_order_invariance": "rows are a time series",
                 "check_methods_subset_invariance": "rows are a time series"}


@pytest.mark.parametrize("est", CHECKED, ids=lambda e: repr(e))
def test_check_estimator(est):
    from sklearn.utils.estimator_checks import check_estimator

    expected = ORDER_MATTERS if getattr(est, "scheme", None) == "gradient" else {}
    failed = []

    def note(**kw):
        if kw.get("status") == "failed":
            failed.append((kw["check_name"], str(kw.get("exception"))[:300]))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_estimator(est, on_fail=None, callback=note, expected_failed_checks=expected)
    assert not failed, failed


@pytest.mark.parametrize("est", [PCACompressor(3), DataQuantizer(4, "symmetric"), FeatureSelector("chi2", 4),
                                 ClusterCompressor(12, random_state=0)], ids=lambda e: type(e).__name__)
def test_clone_params_and_pipeline(blobs, est):
    X, y = blobs
    X = np.abs(X)
    c = clone(est)
    assert c.get_params() == est.get_params()
    c.set_params(**est.get_params())
    pipe = Pipeline([("step", c), ("pca", PCACompressor(2))]).fit(X, y)
    assert pipe.transform(X).shape == (len(X), 2)


@pytest.mark.parametrize("make", [lambda: PCACompressor(4), lambda: DataQuantizer(8), lambda: DataQuantizer(8, "log"),
                                  lambda: DataQuantizer(8, "gradient", axis=1), lambda: FeatureSelector("f_classif", 5),
                                  lambda: ClusterCompressor(15, random_state=0)], ids=range(6))
def test_numpy_in_numpy_out_torch_in_torch_out(blobs, make):
    X, y = blobs
    est_np, est_t = make().fit(X, y), make().fit(torch.from_numpy(X), torch.from_numpy(y))
    out_np = est_np.transform(X)
    out_t = est_t.transform(torch.from_numpy(X))
    assert isinstance(out_np, np.ndarray) and isinstance(out_t, torch.Tensor)
    np.testing.assert_allclose(out_t.numpy().astype(np.float64), out_np.astype(np.float64), rtol=1e-4, atol=1e-4)
    if hasattr(est_np, "inverse_transform") and not isinstance(est_np, ClusterCompressor):
        assert isinstance(est_t.inverse_transform(out_t), torch.Tensor)
        assert isinstance(est_np.inverse_transform(out_np), np.ndarray)


# ------------------------------------------------------------------------------------------------ PCA


@pytest.mark.parametrize("solver", ["auto", "full", "covariance_eigh", "randomized"])
@pytest.mark.parametrize("n_components", [0.95, 0.5, 5])
def test_pca_matches_sklearn(digits, solver, n_components):
    from sklearn.decomposition import PCA

    X, _ = digits
    if solver == "randomized" and isinstance(n_components, float):
        pytest.skip("a variance fraction needs the full spectrum")
    ours = PCACompressor(n_components, solver=solver, random_state=0).fit(X)
    theirs = PCA(n_components, svd_solver="full").fit(X.astype(np.float64))
    assert ours.n_components_ == theirs.n_components_
    np.testing.assert_allclose(ours.explained_variance_ratio_, theirs.explained_variance_ratio_, rtol=1e-3, atol=1e-6)
    k = min(ours.n_components_, 5)  # leading components are well separated: equal up to sign (and here, exactly)
    np.testing.assert_allclose(ours.components_[:k], theirs.components_[:k], atol=2e-3)
    Z = ours.transform(X)
    assert Z.dtype == np.float32 and Z.shape == (len(X), ours.n_components_)
    np.testing.assert_allclose(Z[:, :k], theirs.transform(X)[:, :k], rtol=1e-3, atol=5e-2)


def test_pca_whiten_inverse_and_partial_fit(digits):
    X, _ = digits
    p = PCACompressor(10, whiten=True).fit(X)
    Z = p.transform(X)
    np.testing.assert_allclose(Z.std(0, ddof=1), 1.0, rtol=1e-3)
    back = p.inverse_transform(Z)
    full = PCACompressor(64, solver="full").fit(X)
    np.testing.assert_allclose(full.inverse_transform(full.transform(X)), X, atol=1e-3)
    assert np.sqrt(((back - X) ** 2).mean()) < np.sqrt(((X - X.mean(0)) ** 2).mean())
    inc = PCACompressor(0.9)
    for chunk in np.array_split(X, 7):
        inc.partial_fit(chunk)
    ref = PCACompressor(0.9, solver="covariance_eigh").fit(X)
    assert inc.n_samples_seen_ == len(X) and inc.n_components_ == ref.n_components_
    np.testing.assert_allclose(np.abs(inc.components_), np.abs(ref.components_), atol=1e-4)


def test_pca_errors(digits):
    X, _ = digits
    with pytest.raises(ValueError, match="n_components"):
        PCACompressor(1.5).fit(X)
    with pytest.raises(ValueError, match="more than"):
        PCACompressor(100).fit(X[:50, :10])
    with pytest.raises(ValueError, match="solver"):
        PCACompressor(2, solver="magic").fit(X)
    with pytest.raises(ValueError, match="features"):
        PCACompressor(2).fit(X).transform(X[:, :10])


# ------------------------------------------------------------------------------------------------ quantizer


@pytest.mark.parametrize("scheme", ["asymmetric", "symmetric", "mean", "log", "gradient"])
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("per_feature", [True, False])
def test_quantizer_schemes_round_trip(digits, scheme, bits, per_feature):
    X, _ = digits
    Z = PCACompressor(20).fit_transform(X)
    q = DataQuantizer(bits, scheme, per_feature=per_feature, block=32).fit(Z)
    codes = q.transform(Z)
    assert codes.dtype == (np.uint8 if scheme == "asymmetric" else np.int8) and codes.shape == Z.shape
    qmax = (1 << bits) - 1 if scheme == "asymmetric" else (1 << (bits - 1)) - 1
    assert codes.astype(np.int32).max() <= qmax and codes.astype(np.int32).min() >= (0 if scheme == "asymmetric"
                                                                                   else -qmax)
    back = q.inverse_transform(codes)
    err = np.abs(back - Z)
    if scheme == "asymmetric":  # half a step everywhere (the fitted range covers the training data)
        assert np.all(err <= 0.5 * q.scale_ + 1e-4 * np.abs(Z).max())
    elif scheme == "symmetric":
        assert np.all(err <= 0.5 * q.scale_ + 1e-4 * np.abs(Z).max())
    elif scheme == "log":  # a relative error: half a step of the log2 grid
        nz = np.abs(Z) > 2 ** (q.offset_ + 0.5 * q.scale_)
        rel = np.abs(np.log2(np.abs(back[nz]) / np.abs(Z[nz])))
        assert rel.max() <= 0.5 * q.scale_.max() + 1e-3
    elif scheme == "gradient":
        assert np.sqrt((err ** 2).mean()) <= q.scale_.max()
    rep = q.report(Z)
    assert rep["bytes_out"] * 4 == rep["bytes_in"] and rep["rmse"] >= 0


def test_quantizer_mean_scheme_divides_by_the_mean(digits):
    X, _ = digits
    q = DataQuantizer(8, "mean").fit(X)
    mean = np.abs(X).mean(0)
    np.testing.assert_allclose(q.scale_, np.where(mean > 0, mean * 128 / 127, 1.0), rtol=1e-6)
    np.testing.assert_array_equal(q.transform(X), np.clip(np.round(X / q.scale_), -127, 127).astype(np.int8))


def test_quantizer_reuses_scales_and_clips_new_data(digits):
    X, _ = digits
    q = DataQuantizer(8).fit(X[:1000])
    wide = X[1000:] * 3 + 100
    codes = q.transform(wide)
    assert codes.max() <= 255 and q.n_samples_seen_ == 1000
    q2 = clone(q).fit(X[:1000])
    np.testing.assert_array_equal(q2.scale_, q.scale_)
    inc = DataQuantizer(8)
    for chunk in np.array_split(X, 5):
        inc.partial_fit(chunk)
    full = DataQuantizer(8).fit(X)
    np.testing.assert_array_equal(inc.scale_, full.scale_)
    np.testing.assert_array_equal(inc.offset_, full.offset_)


def test_quantizer_gradient_tracks_signals():
    t = np.linspace(0, 40, 5000, dtype=np.float32)[:, None]
    X = np.sin(t * np.array([[1.0, 2.3, 0.2]], dtype=np.float32)) * np.array([[1.0, 10.0, 0.1]], dtype=np.float32)
    grad = DataQuantizer(8, "gradient", block=128).fit(X)
    plain = DataQuantizer(8, "symmetric").fit(X)
    e_grad = np.sqrt(((grad.inverse_transform(grad.transform(X)) - X) ** 2).mean(0))
    e_plain = np.sqrt(((plain.inverse_transform(plain.transform(X)) - X) ** 2).mean(0))
    assert np.all(e_grad < e_plain / 3)  # steps of a smooth signal are far smaller than its range (anchors aside)
    rows = DataQuantizer(8, "gradient", axis=1, block=16).fit(X.T.copy())
    np.testing.assert_allclose(rows.inverse_transform(rows.transform(X.T.copy())), X.T, atol=0.2)


def test_quantizer_errors(digits):
    X, _ = digits
    for kw, match in [({"bits": 9}, "bits"), ({"bits": 1}, "bits"), ({"scheme": "cubic"}, "scheme"),
                      ({"block": 0}, "block"), ({"axis": 2}, "axis")]:
        with pytest.raises(ValueError, match=match):
            DataQuantizer(**kw).fit(X)
    q = DataQuantizer().fit(X)
    bad = X.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        q.transform(bad)
    with pytest.raises(TypeError, match="uint8"):
        q.inverse_transform(q.transform(X).astype(np.int8))


# ------------------------------------------------------------------------------------------------ clusters


def test_coreset_per_class(digits):
    X, y = digits
    cc = ClusterCompressor(0.1, random_state=0).fit(X, y)
    Xc, yc, w = cc.coreset_
    assert Xc.shape[1] == 64 and len(Xc) == len(yc) == len(w) <= round(0.1 * len(X))
    assert w.sum() == len(X)
    for c in np.unique(y):  # each class's share of the clusters follows its size, and its members stay with it
        assert abs((yc == c).sum() - 0.1 * (y == c).sum()) <= 1
        assert w[yc == c].sum() == (y == c).sum()
    labels = cc.predict(X)
    assert labels.dtype == np.int64 and labels.max() < len(cc.cluster_centers_)
    np.testing.assert_array_equal(cc.transform(X), cc.cluster_centers_[labels])
    np.testing.assert_array_equal(labels, fdd.kmeans_assign(X, cc.cluster_centers_)[0])


def test_coreset_majority_labels_and_regression(digits):
    X, y = digits
    cc = ClusterCompressor(40, per_class=False, random_state=0).fit(X, y)
    members = cc.predict(X)
    for j in np.nonzero(cc.counts_)[0][:10]:
        assert cc.centroid_labels_[j] == np.bincount(y[members == j]).argmax()
    Xr, yr = make_regression(300, 5, random_state=0)
    reg = ClusterCompressor(10, per_class=False, random_state=0).fit(Xr.astype(np.float32), yr)
    m = reg.predict(Xr.astype(np.float32))
    np.testing.assert_allclose(reg.centroid_labels_[m[0]], yr[m == m[0]].mean())
    with pytest.raises(ValueError, match="continuous"):
        ClusterCompressor(10).fit(Xr, yr)


def test_kmeans_quality_close_to_sklearn(digits):
    from sklearn.cluster import KMeans

    X, _ = digits
    ours = ClusterCompressor(30, per_class=False, random_state=0).fit(X)
    theirs = KMeans(30, n_init=1, random_state=0).fit(X)
    assert ours.inertia_ <= 1.05 * theirs.inertia_
    mb = ClusterCompressor(30, method="minibatch", per_class=False, batch_size=256, max_iter=15, random_state=0).fit(X)
    assert mb.inertia_ <= 1.15 * theirs.inertia_
    inc = ClusterCompressor(30, per_class=False, batch_size=256, random_state=0)
    for chunk in np.array_split(X, 4):
        inc.partial_fit(chunk)
    assert inc.counts_.sum() == len(X) and inc.inertia_ <= 1.3 * theirs.inertia_


def test_cluster_errors(digits):
    X, y = digits
    with pytest.raises(ValueError, match="fewer than the 10 classes"):
        ClusterCompressor(5).fit(X, y)
    with pytest.raises(ValueError, match="n_clusters"):
        ClusterCompressor(1.5).fit(X, y)
    with pytest.raises(ValueError, match="method"):
        ClusterCompressor(10, method="spectral").fit(X, y)
    with pytest.raises(ValueError, match="fraction needs the number of samples"):
        ClusterCompressor(0.1).partial_fit(X, y)


# ------------------------------------------------------------------------------------------------ selectors


def sk_top(scores, k):
    clean = np.where(np.isnan(scores), -np.inf, scores)
    return set(np.argsort(-clean, kind="stable")[:k])


@pytest.mark.parametrize("method", ["chi2", "f_classif", "variance", "correlation"])
def test_statistic_selectors_match_sklearn(digits, method):
    from sklearn import feature_selection as fs

    X, y = digits
    sel = FeatureSelector(method, 12).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = {"chi2": lambda: fs.chi2(X, y)[0], "f_classif": lambda: fs.f_classif(X, y)[0],
                  "variance": lambda: X.astype(np.float64).var(0),  # (VarianceThreshold(0) clips it at the range)
                  "correlation": lambda: np.abs(fs.r_regression(X, y))}[method]()
    finite = np.isfinite(theirs)
    np.testing.assert_allclose(sel.scores_[finite], theirs[finite], rtol=1e-5, atol=1e-9)  # (theirs: fp32 sums)
    assert set(sel.get_support(indices=True)) == sk_top(theirs, 12)
    if method == "chi2":
        kbest = fs.SelectKBest(fs.chi2, k=12).fit(X, y)
        np.testing.assert_array_equal(sel.get_support(), kbest.get_support())


def test_model_selectors_match_sklearn(blobs):
    from sklearn.feature_selection import RFE, SelectFromModel
    from sklearn.linear_model import LogisticRegression, RidgeClassifier

    X, y = blobs
    rfe = FeatureSelector("rfe", 4).fit(X, y)
    np.testing.assert_array_equal(rfe.get_support(), RFE(RidgeClassifier(), n_features_to_select=4).fit(X, y).support_)
    est = LogisticRegression(l1_ratio=1.0, C=0.05, solver="saga", max_iter=3000, random_state=0)
    lasso = FeatureSelector("lasso", 4, estimator=est).fit(X, y)
    sfm = SelectFromModel(clone(est), max_features=4, threshold=-np.inf).fit(X, y)
    np.testing.assert_array_equal(lasso.get_support(), sfm.get_support())
    default = FeatureSelector("lasso", 4).fit(X, y)
    assert default.get_support().sum() == 4


def test_mutual_info_agrees_with_sklearn():
    from sklearn.feature_selection import mutual_info_classif

    X, y = make_classification(5000, 30, n_informative=8, n_redundant=0, random_state=1)
    sel = FeatureSelector("mutual_info", 8).fit(X, y)
    theirs = mutual_info_classif(X, y, random_state=0)
    assert len(set(sel.get_support(indices=True)) & sk_top(theirs, 8)) >= 7
    # a continuous target, and a discrete feature among continuous ones
    Xr, yr = make_regression(3000, 10, n_informative=3, random_state=0)
    reg = FeatureSelector("mutual_info", 3).fit(Xr, yr)
    assert set(reg.get_support(indices=True)) == sk_top(np.abs(np.corrcoef(Xr.T, yr)[-1, :-1]), 3)


def test_entropy_drops_redundant_features(blobs):
    X, y = blobs
    dup = np.hstack([X, X[:, :3] * 2.0 + 1.0])  # features 12..14 copy 0..2
    sel = FeatureSelector("entropy", 4).fit(dup, y)
    kept = set(sel.get_support(indices=True))
    assert len(kept) == 4 and not (kept & set(np.nonzero(sel.redundant_)[0]))  # enough survived: no fill
    for a in range(3):
        assert not {a, a + 12} <= kept  # never both of a pair
    assert sel.redundant_[12]  # the copy of the best feature
    np.testing.assert_allclose(sel.scores_[:3], sel.scores_[12:], rtol=1e-12)
    mi = FeatureSelector("mutual_info", 5).fit(dup, y)
    assert len(set(mi.get_support(indices=True))) == 5


def test_selector_transform_and_inverse(blobs):
    X, y = blobs
    sel = FeatureSelector("f_classif", 3).fit(X, y)
    idx = sel.get_support(indices=True)
    np.testing.assert_array_equal(sel.transform(X), X[:, idx])
    t = sel.transform(torch.from_numpy(X))
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(X[:, idx]))
    back = sel.inverse_transform(t)
    assert torch.equal(back[:, torch.from_numpy(idx)], t) and int((back != 0).sum()) == int((t != 0).sum())


def test_selector_errors(blobs):
    X, y = blobs
    with pytest.raises(ValueError, match="non-negative.*column"):
        FeatureSelector("chi2", 3).fit(X, y)
    with pytest.raises(ValueError, match="k: 20 is more than the 12 features"):
        FeatureSelector("f_classif", 20).fit(X, y)
    with pytest.raises(ValueError, match="supervised"):
        FeatureSelector("mutual_info", 3).fit(X)
    with pytest.raises(ValueError, match="y = zeros"):
        FeatureSelector("f_classif", 3).fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="method"):
        FeatureSelector("pagerank", 3).fit(X, y)
    with pytest.raises(ValueError, match="class labels"):
        FeatureSelector("chi2", 3).fit(np.abs(X), np.random.default_rng(0).normal(size=len(X)))
    with pytest.raises(ValueError, match="k:"):
        FeatureSelector("variance", 0).fit(X)


# ------------------------------------------------------------------------------------------------ save / load


def test_save_load_round_trip(tmp_path, blobs):
    X, y = blobs
    Xp = np.abs(X)
    fitted = [PCACompressor(0.9).fit(X), DataQuantizer(6, "log").fit(X), DataQuantizer(8, "gradient").fit(X),
              ClusterCompressor(9, random_state=0).fit(X, y.astype(str)), FeatureSelector("entropy", 4).fit(X, y),
              FeatureSelector("rfe", 3).fit(X, y), FeatureSelector("chi2", 3).fit(Xp, y)]
    for i, est in enumerate(fitted):
        path = tmp_path / f"c{i}.fd"
        est.save(path)
        back = type(est).load(path)
        assert back.get_params().keys() == est.get_params().keys()
        data = Xp if isinstance(est, FeatureSelector) and est.method == "chi2" else X
        a, b = est.transform(data), back.transform(data)
        np.testing.assert_array_equal(a, b)
    cc = type(fitted[3]).load(tmp_path / "c3.fd")
    assert list(cc.coreset_[1][:3]) == list(fitted[3].coreset_[1][:3]) and cc.coreset_[1].dtype == object
    pipe = Pipeline([("pca", PCACompressor(5)), ("q", DataQuantizer())]).fit(X)
    fdd.save(pipe, tmp_path / "pipe.fd")
    loaded = fdd.load(tmp_path / "pipe.fd")
    assert isinstance(loaded, Pipeline) and [n for n, _ in loaded.steps] == ["pca", "q"]
    np.testing.assert_array_equal(loaded.transform(X), pipe.transform(X))
    again = PCACompressor.load(tmp_path / "c0.fd").partial_fit(X)  # the running statistics travel too
    assert again.n_samples_seen_ == 2 * len(X)


def test_load_errors(tmp_path, blobs):
    X, _ = blobs
    path = tmp_path / "q.fd"
    DataQuantizer().fit(X).save(path)
    with pytest.raises(ValueError, match="holds a DataQuantizer"):
        PCACompressor.load(path)
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF
    (tmp_path / "bad.fd").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="checksum"):
        fdd.load(tmp_path / "bad.fd")
    import fastdistill

    fastdistill.save({"w": torch.ones(3)}, tmp_path / "model.fd")
    with pytest.raises(ValueError, match="does not hold fastdistill.data"):
        fdd.load(tmp_path / "model.fd")


# ------------------------------------------------------------------------------------------------ acceptance


def test_digits_pca_quantize_shrinks_8x_within_one_point(digits):
    X, y = digits
    out = compress_dataset(X, y, ["pca:0.95", "quantize:8"])
    rep = out.report
    assert out.X.dtype == np.uint8 and rep["ratio"] >= 8.0
    assert rep["accuracy"]["difference"] >= -0.01, rep["accuracy"]
    assert [s["step"] for s in rep["steps"]] == ["pca", "quantize"]
    assert out.transform(X[:5]).shape == out.features()[:5].shape


def test_digits_ten_percent_coreset_within_three_points(digits):
    X, y = digits
    out = compress_dataset(X, y, ["clusters:0.1"])
    assert len(out.X) <= 180 and out.sample_weight.sum() == len(X)
    assert out.report["accuracy"]["difference"] >= -0.03, out.report["accuracy"]


def test_compress_dataset_options(digits):
    X, y = digits
    out = compress_dataset(torch.from_numpy(X), torch.from_numpy(y), ["select:f_classif:40", "pca:20", "quantize:6"],
                           eval_data=(X[:300], y[:300]))
    assert isinstance(out.X, torch.Tensor) and out.X.shape[1] == 20 and not out.report["accuracy"]["holdout"]
    assert isinstance(out.transform(torch.from_numpy(X[:3])), torch.Tensor)
    unlabelled = compress_dataset(X, None, [DataQuantizer(8)])
    assert "accuracy" not in unlabelled.report and unlabelled.report["ratio"] == 4.0
    with pytest.raises(ValueError, match="last"):
        compress_dataset(X, y, ["quantize:8", "pca:5"])
    with pytest.raises(ValueError, match="not a step"):
        compress_dataset(X, y, ["zip:9"])
    with pytest.raises(ValueError, match="at most one clusters step"):
        compress_dataset(X, y, ["clusters:0.5", "clusters:0.5"])
