"""The aarch64 tiers (neon, neon_dot) under emulation: tools/arm_check.sh cross-compiles every C++ unit of the
extension for aarch64 and runs csrc/tests/arm_kernels_test.cpp, which checks every arm kernel against the scalar
one, under qemu-aarch64 at `-cpu max` (both tiers) and `-cpu cortex-a72` (no dot product: neon only). Where this
machine has the native x86 module, the weight the driver multiplies first is packed here, by the x86 build, to
show that a packed weight moves between the architectures unchanged.

Skips unless aarch64-linux-gnu-g++ and qemu-aarch64 are on PATH (`.ci/run` installs them with apt)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("aarch64-linux-gnu-g++", "qemu-aarch64")
missing = [t for t in TOOLS if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(bool(missing), reason=f"no {' / '.join(missing)} (apt-get install "
                                                      "g++-aarch64-linux-gnu qemu-user)")


def _x86_packed_weight(path: Path) -> bool:
    """Writes k, n, m, B, B packed by this machine's native module, its comp, and A, for the driver's --x86-pack.
    False where the native module is not built here."""
    try:
        from fastdistill import _C
    except ImportError:
        return False
    rng = np.random.default_rng(17)
    k, n, m = 300, 130, 7  # K not a multiple of 64, a narrow last panel, rows past a whole tile
    b = rng.integers(-128, 128, size=(k, n), dtype=np.int8)
    a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    nbytes, ncomp = _C.int8_packed_sizes(k, n)
    packed = np.empty(nbytes, dtype=np.int8)
    comp = np.empty(ncomp, dtype=np.int32)
    _C.int8_pack(b, packed, comp)
    with open(path, "wb") as fh:
        fh.write(np.array([k, n, m], dtype="<i8").tobytes())
        for arr in (b, packed, comp.astype("<i4"), a):
            fh.write(np.ascontiguousarray(arr).tobytes())
    return True


def test_arm_kernels_under_qemu(tmp_path):
    args = ["bash", str(ROOT / "tools" / "arm_check.sh")]
    pack = tmp_path / "x86_pack.bin"
    if _x86_packed_weight(pack):
        args += ["--x86-pack", str(pack)]
    env = dict(os.environ, ARM_BUILD=str(tmp_path / "arm"), PATH=os.path.dirname(sys.executable) + os.pathsep +
               os.environ.get("PATH", ""))
    run = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    out = run.stdout + run.stderr
    print(out)  # what ran, shown with -s or on failure
    assert run.returncode == 0, out[-6000:]
    # both CPU models ran, the dot-product tier where the CPU has it and only there, and nothing failed
    runs = out.split("arm_check: qemu-aarch64 -cpu ")[1:]
    assert [r.split("\n", 1)[0] for r in runs] == ["max", "cortex-a72"], out[-3000:]
    assert "tiers tested against scalar: neon neon_dot" in runs[0]
    assert "neon=neon-smull neon_dot=neon-sdot" in runs[0] and "neon=neon-smull\n" in runs[1]
    assert re.search(r"tiers tested against scalar: neon \(neon_dot skipped", runs[1])
    for r in runs:
        assert re.search(r"OK: \d+ checks, 0 failed", r), r[-3000:]
    assert "kernel units for aarch64" in out
    if pack.exists():
        assert out.count("x86-packed weight") == 2
