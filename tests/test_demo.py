"""``fastdistill demo``: the quick run's report (every row, sane values), the files --out writes, a clear non-zero
exit on failure with no report left behind, and the run without matplotlib."""
from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys

import pytest

import fastdistill as fd
from fastdistill import demo

SUB_ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fd.__file__)))
ROWS = ["teacher", "student alone", "distilled", "distilled + features", "10% labels: alone",
        "10% labels: pretrain + finetune", "compressed data: alone", "compressed data: distilled", "90% pruned", "90% pruned + int8", "saved file, reloaded"]


@pytest.fixture(scope="module")
def quick_report():
    return demo.run(seeds=2, quick=True)


def test_quick_report_rows(quick_report):
    rows = {r["name"]: r for r in quick_report["rows"]}
    assert list(rows) == ROWS
    for r in rows.values():
        assert len(r["accuracy"]["values"]) == 2 and r["latency_ms"]["mean"] > 0 and r["torch_latency_ms"]["mean"] > 0
    acc = {k: v["accuracy"]["mean"] for k, v in rows.items()}
    assert acc["teacher"] > 0.9 and acc["10% labels: pretrain + finetune"] > acc["10% labels: alone"]
    assert acc["saved file, reloaded"] == acc["90% pruned + int8"]
    assert rows["compressed data: distilled"]["data_ratio"]["mean"] >= 5
    assert acc["compressed data: distilled"] > acc["student alone"] - 0.05
    params = {k: v["params"]["mean"] for k, v in rows.items()}
    assert params["90% pruned"] == pytest.approx(0.1 * params["distilled"], rel=0.15)  # biases are not pruned
    size = {k: v["bytes"]["mean"] for k, v in rows.items()}
    assert size["90% pruned + int8"] < size["90% pruned"] < size["distilled"] < size["teacher"] / 5
    assert quick_report["seconds"]["wall"] > 0


def test_outputs_are_written_whole(quick_report, tmp_path):
    pytest.importorskip("matplotlib")  # an optional extra ("plot"); the run without it is tested below
    written = demo.write_outputs(quick_report, str(tmp_path / "out"))
    assert sorted(os.path.basename(p) for p in written) == ["accuracy_vs_size.png", "report.json"]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["rows"][0]["name"] == "teacher"
    assert (tmp_path / "out" / "accuracy_vs_size.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path / "out")) == ["accuracy_vs_size.png", "report.json"]  # no temporaries


def test_without_matplotlib_no_png_and_a_notice(quick_report, tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    written = demo.write_outputs(quick_report, str(tmp_path))
    assert [os.path.basename(p) for p in written] == ["report.json"]
    assert "matplotlib" in capsys.readouterr().out


def test_cli_failure_exits_nonzero_with_a_clear_message(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = subprocess.run([sys.executable, "-m", "fastdistill.cli", "demo", "--quick", "--seeds", "1", "--out",
                          str(blocker / "sub")], capture_output=True, text=True, timeout=300, env=SUB_ENV)
    assert out.returncode != 0
    assert "fastdistill demo: failed:" in out.stderr and "Traceback" not in out.stderr
    assert blocker.read_text() == "not a directory"
    out = subprocess.run([sys.executable, "-m", "fastdistill.cli", "demo", "--seeds", "0", "--out", ""],
                         capture_output=True, text=True, timeout=300, env=SUB_ENV)
    assert out.returncode != 0 and "seeds" in out.stderr
