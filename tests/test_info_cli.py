"""Installation report, CLI commands, and backend selection plumbing."""
import json
import os
import subprocess
import sys

import pytest
import torch

import fastdistill as fd
from fastdistill import _dispatch

# Subprocesses import the same fastdistill as this process (installed, or a source tree with in-place builds).
SUB_ENV = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fd.__file__)))


def test_info_reports_every_backend():
    inf = fd.info()
    assert set(inf["backends"]) == set(_dispatch.BACKENDS)
    assert inf["backends"]["python"]["usable"]
    for b in inf["backends"].values():
        assert b["usable"] or b["reason"]


def test_every_kernel_has_a_reference_twin():
    ops = fd.info()["ops"]
    assert {"magnitude_masks", "quantize", "dequantize", "int8_linear", "kd_loss", "spmm"} <= set(ops)
    for op, backends in ops.items():
        assert "python" in backends, f"{op} has no pure-torch reference kernel"


@pytest.mark.skipif(os.environ.get("FASTDISTILL_REQUIRE_NATIVE") != "1", reason="set by CI, where the build must work")
def test_native_backend_built():
    assert fd.info()["backends"]["native"]["usable"], fd.info()["backends"]["native"]["reason"]
    assert fd.info()["simd"]["level"] in ("scalar", "avx2", "avx512", "neon", "neon_dot")


def test_cli_info_json(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastdistill.cli", "info", "--json"], capture_output=True, text=True,
                         check=True, cwd=tmp_path, env=SUB_ENV)
    assert json.loads(out.stdout)["version"] == fd.__version__


def test_cli_bench_quick_json(tmp_path):
    path = tmp_path / "bench.json"
    out = subprocess.run([sys.executable, "-m", "fastdistill.cli", "bench", "prune", "--quick", "--json", str(path)],
                         capture_output=True, text=True, check=True, timeout=600, cwd=tmp_path, env=SUB_ENV)
    assert "| prune |" in out.stdout
    rows = json.loads(path.read_text())["rows"]
    assert rows and all(r["ours_ms"] > 0 and r["peer_ms"] > 0 for r in rows)


def test_cli_bench_unknown_suite_is_a_usage_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastdistill.cli", "bench", "prune", "nosuch"], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path, env=SUB_ENV)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "suite: expected one of" in out.stderr and "'nosuch'" in out.stderr and not out.stdout


def test_set_backend_and_env(tmp_path):
    before = fd.get_backend()
    fd.set_backend("python")
    try:
        assert fd.get_backend() == "python"
        assert _dispatch.select_kernel("magnitude_masks", ([torch.ones(3)], 1))[0] == "python"
    finally:
        fd.set_backend(before)
    with pytest.raises(ValueError, match="backend: expected one of"):
        fd.set_backend("gpu")
    env = dict(SUB_ENV, FASTDISTILL_BACKEND="python")
    out = subprocess.run([sys.executable, "-c", "import fastdistill; print(fastdistill.get_backend())"], env=env,
                         capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "python"
    env["FASTDISTILL_BACKEND"] = "bogus"
    out = subprocess.run([sys.executable, "-c", "import fastdistill; print(fastdistill.get_backend())"], env=env,
                         capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "auto" and "FASTDISTILL_BACKEND" in out.stderr


def test_auto_prefers_native_then_numba():
    order = [b for b in ("native", "numba", "python") if _dispatch.backend_unavailable_reason(b) is None]
    assert _dispatch.select_kernel("magnitude_masks", ([torch.ones(3)], 1))[0] == order[0]


def test_pure_python_without_compiled_modules_or_numba(tmp_path):
    """Where neither the C++/CUDA modules nor Numba can be imported, import works, info says why, ops still run."""
    code = (
        "import sys\n"
        "for name in ('fastdistill._C', 'fastdistill._cuda', 'numba'):\n"
        "    sys.modules[name] = None  # makes `import name` raise ImportError\n"
        "import torch, fastdistill as fd\n"
        "inf = fd.info()\n"
        "assert [b for b, v in inf['backends'].items() if v['usable']] == ['python'], inf\n"
        "assert 'numba not importable' in inf['backends']['numba']['reason']\n"
        "assert '_C not importable' in inf['backends']['native']['reason']\n"
        "x = torch.randn(1000)\n"
        "assert int((~fd.magnitude_mask(x, 0.3)).sum()) == 300\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=SUB_ENV)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
