"""`fastdistill data compress|inspect`: every input format, the outputs (npz, model, report), one-line errors with
exit status 2 for bad files, and no partial output when a run fails."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fastdistill import data as fdd
from fastdistill.cli import main


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X.astype(np.float32), y


def test_npy_streamed_pca_quantize(tmp_path, digits, capsys):
    X, y = digits
    src = tmp_path / "d.npy"
    np.save(src, np.hstack([X, y[:, None]]))
    out = tmp_path / "o.npz"
    assert main(["data", "compress", str(src), "-o", str(out), "--pca", "0.95", "--quantize", "8", "--labels", "64",
                 "--chunk-rows", "300"]) == 0
    with np.load(out) as z:
        codes, labels = z["X"], z["y"]
    assert codes.dtype == np.uint8 and codes.shape[0] == len(X) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, y)
    steps = fdd.load(tmp_path / "o.fd")
    assert [type(s).__name__ for s in steps] == ["PCACompressor", "DataQuantizer"]
    pca = fdd.PCACompressor(0.95).fit(X)
    assert steps[0].n_components_ == pca.n_components_ == codes.shape[1]
    np.testing.assert_allclose(steps[0].components_, pca.components_, atol=1e-4)
    report = json.loads((tmp_path / "o.json").read_text())
    assert report["ratio"] > 8 and [s["step"] for s in report["steps"]] == ["pca", "quantize"]
    assert "1797 x 64 -> 1797 x" in capsys.readouterr().out
    assert main(["data", "inspect", str(out)]) == 0 and "uint8" in capsys.readouterr().out
    assert main(["data", "inspect", str(tmp_path / "o.fd")]) == 0 and "PCACompressor" in capsys.readouterr().out


def test_csv_select_clusters_and_npz(tmp_path, digits):
    X, y = digits
    csv = tmp_path / "d.csv"
    lines = [",".join([f"p{i}" for i in range(64)] + ["label"])]
    lines += [",".join(str(int(v)) for v in row) + f",c{label}" for row, label in zip(X, y)]
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "c.npz"
    assert main(["data", "compress", str(csv), "-o", str(out), "--select", "f_classif:20", "--clusters", "0.1",
                 "--labels", "label", "--quiet"]) == 0
    with np.load(out) as z:
        assert z["X"].shape == (180, 20) and z["sample_weight"].sum() == len(X)
        assert set(z["y"]) == {f"c{i}" for i in range(10)}
    npz = tmp_path / "d.npz"
    np.savez(npz, X=X, y=y)
    txt = tmp_path / "d.txt"
    np.savetxt(txt, X[:50])
    assert main(["data", "compress", str(npz), "-o", str(tmp_path / "n.npz"), "--quantize", "4", "--scheme",
                 "symmetric", "--labels", "y", "--quiet"]) == 0
    assert main(["data", "compress", str(txt), "-o", str(tmp_path / "t.npz"), "--pca", "5", "--quiet"]) == 0
    with np.load(tmp_path / "t.npz") as z:
        assert z["X"].shape == (50, 5) and z["X"].dtype == np.float32


@pytest.mark.parametrize("name,content,match", [
    ("ragged.txt", "1 2 3\n4 5\n", "line 2 has 2 fields, expected 3"),
    ("cells.csv", "a,b,c\n1,2,3\n4,x,6\n", "line 3, field 2: 'x' is not a number"),
    ("nan.txt", "1 2\n3 nan\n", "line 2, field 2: 'nan' is not a finite number"),
    ("empty.csv", "", "no data rows"),
    ("header.csv", "a,b\n", "a header line but no data rows"),
])
def test_bad_text_files(tmp_path, capsys, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    out = tmp_path / "o.npz"
    assert main(["data", "compress", str(path), "-o", str(out), "--quantize", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1 and err.startswith("fastdistill data: error:")
    assert not out.exists() and os.listdir(tmp_path) == [name]


def test_bad_arrays_and_arguments(tmp_path, capsys):
    x = np.ones((5000, 3), dtype=np.float32)
    x[4321, 2] = np.nan
    np.save(tmp_path / "nan.npy", x)
    cases = [(["nan.npy", "--quantize", "8", "--chunk-rows", "1000"], "row 4321, column 2 is nan"),
             (["nan.npy", "--labels", "7", "--quantize", "8"], "--labels: column 7 does not exist"),
             (["nan.npy"], "nothing to do"),
             (["nan.npy", "--select", "mutual_info"], "METHOD:K"),
             (["missing.npy", "--pca", "2"], "no such file")]
    np.save(tmp_path / "three_d.npy", np.ones((2, 2, 2)))
    cases.append((["three_d.npy", "--pca", "1"], "expected 2-D"))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    cases.append((["junk.npy", "--pca", "1"], "not a .npy file"))
    for argv, match in cases:
        argv = [str(tmp_path / argv[0])] + argv[1:]
        assert main(["data", "compress", *argv, "-o", str(tmp_path / "o.npz")]) == 2, argv
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "o.npz").exists()


def test_failure_while_writing_leaves_no_output(tmp_path, digits, monkeypatch):
    X, _ = digits
    np.save(tmp_path / "d.npy", X)
    out = tmp_path / "o.npz"
    out.write_bytes(b"previous result")
    calls = {"n": 0}
    real = fdd.DataQuantizer.transform

    def flaky(self, chunk):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(self, chunk)

    monkeypatch.setattr(fdd.DataQuantizer, "transform", flaky)
    assert main(["data", "compress", str(tmp_path / "d.npy"), "-o", str(out), "--quantize", "8", "--chunk-rows",
                 "400", "--quiet"]) == 2
    assert out.read_bytes() == b"previous result"  # untouched, and no temporary file left behind
    assert sorted(os.listdir(tmp_path)) == ["d.npy", "o.npz"]
