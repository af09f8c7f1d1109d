"""The package's layering, checked: backends never import each other, storage formats sit on the ground floor,
library code never imports the bench harness, the Numba tier runs without the C++ module, and eager calls never
pull in the compiler stack."""
from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import fastdistill
from fastdistill._dispatch import backend_unavailable_reason

PACKAGE = pathlib.Path(fastdistill.__file__).parent
BACKENDS = ("python", "native", "numba", "cuda")


def _imports(path: pathlib.Path) -> list:
    """Absolute names of the modules ``path`` imports (relative imports resolved against its package)."""
    module = ".".join(("fastdistill",) + path.relative_to(PACKAGE).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            prefix = (base + "." if node.level else "") + (node.module or "")
            names += [prefix.rstrip(".")] + [f"{prefix.rstrip('.')}.{a.name}" for a in node.names]
    return names


def _modules(sub: str) -> list:
    return sorted((PACKAGE / sub).rglob("*.py"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_never_import_each_other(backend):
    others = [f"fastdistill.backends.{b}" for b in BACKENDS if b != backend]
    for path in _modules(f"backends/{backend}"):
        bad = [n for n in _imports(path) if any(n == o or n.startswith(o + ".") for o in others)]
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_formats_are_the_ground_floor():
    for path in _modules("formats"):
        bad = [n for n in _imports(path) if n.startswith("fastdistill.") and not n.startswith("fastdistill.formats")]
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_library_code_never_imports_the_bench_harness():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("benchmarks", "bench.py", "cli.py"):
            continue
        bad = [n for n in _imports(path) if n in ("fastdistill.bench", "fastdistill.benchmarks")
               or n.startswith(("fastdistill.bench.", "fastdistill.benchmarks."))]
        assert not bad, f"{rel} imports {bad}"


def _run(code: str, tmp_path: pathlib.Path, *, block_native: bool, args=()) -> subprocess.CompletedProcess:
    """Runs ``code`` (or pytest ``args``) in a fresh interpreter that sees fastdistill where this one does; with
    ``block_native`` a sitecustomize makes ``import fastdistill._C`` fail as on a machine where it was not built."""
    paths = [str(PACKAGE.parent)]
    if block_native:
        (tmp_path / "sitecustomize.py").write_text(textwrap.dedent("""
            import sys

            class _NoNative:
                def find_spec(self, name, path=None, target=None):
                    if name == "fastdistill._C":
                        raise ImportError("fastdistill._C blocked by the test (as if it had not been built)")
                    return None

            sys.meta_path.insert(0, _NoNative())
        """))
        paths.insert(0, str(tmp_path))
    env = {k: v for k, v in os.environ.items() if k not in ("FASTDISTILL_REQUIRE_NATIVE", "FASTDISTILL_BACKEND")}
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "pytest", *args]
    return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)


def test_eager_calls_do_not_import_the_compiler_stack(tmp_path):
    code = textwrap.dedent("""
        import sys, torch, fastdistill as fd
        w = torch.randn(1000)
        fd.magnitude_mask(w, 0.5)
        fd.prune_(w.clone(), 0.5)
        fd.quantize(w, 8).dequantize()
        s = torch.randn(4, 10, requires_grad=True)
        fd.kd_loss(s, torch.randn(4, 10), torch.randint(0, 10, (4,))).backward()
        q = fd.nn.Int8Linear.from_float(torch.nn.Linear(16, 8))
        q(torch.randn(3, 16))
        print("torch._dynamo" in sys.modules, "numba" in sys.modules)
    """)
    r = _run(code, tmp_path, block_native=False)
    assert r.returncode == 0, r.stderr
    dynamo, numba = r.stdout.split()
    assert dynamo == "False", "an eager call imported torch._dynamo (about a second on the first call)"
    if backend_unavailable_reason("native") is None:
        assert numba == "False", "calls the native kernels serve imported Numba (about 0.2 s on the first call)"


def test_numba_tier_stands_alone(tmp_path):
    """Without the C++ module every CPU op still runs on Numba: the op tests' Numba cases pass."""
    pytest.importorskip("numba")
    code = textwrap.dedent("""
        import fastdistill as fd
        b = fd.info()["backends"]
        assert not b["native"]["usable"] and "blocked by the test" in str(b["native"]["reason"]), b["native"]
        assert b["numba"]["usable"] is True, b["numba"]
        print("ok")
    """)
    r = _run(code, tmp_path, block_native=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
    tests = pathlib.Path(__file__).parent
    files = [str(tests / f) for f in ("test_prune.py", "test_quant.py", "test_kd.py", "test_sparse_kd.py",
                                      "test_sparse.py", "test_int8.py")]
    r = _run("", tmp_path, block_native=True, args=["-q", "-x", "-p", "no:cacheprovider", "-k", "numba", *files])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and " failed" not in r.stdout, r.stdout[-2000:]
