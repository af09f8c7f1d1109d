"""Bounded-memory benchmark: `fastdistill data compress` on a 4 GB .npy (16M x 64 float32, low-rank plus noise)
with PCA to 95% variance and 8-bit quantization, in a child process whose peak resident memory (ru_maxrss) is
reported. Target: < 1 GB resident.

Run: ``python benches/data_stream_4gb.py [--dir DIR] [--rows N] [--keep]`` (about 4 GB of disk in DIR, default the
system temp folder; the input is written once and reused while it exists)."""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def make_input(path: str, rows: int, cols: int = 64, rank: int = 8, chunk: int = 1 << 18) -> None:
    """A C-ordered float32 .npy of rows x cols: rank-8 structure plus 5% noise, written chunk by chunk."""
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((rank, cols)).astype(np.float32)
    mm = np.lib.format.open_memmap(path + ".part", mode="w+", dtype=np.float32, shape=(rows, cols))
    for i in range(0, rows, chunk):
        m = min(chunk, rows - i)
        z = rng.standard_normal((m, rank), dtype=np.float32)
        mm[i:i + m] = z @ basis + 0.05 * rng.standard_normal((m, cols), dtype=np.float32)
    mm.flush()
    del mm
    os.replace(path + ".part", path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--rows", type=int, default=16_000_000)
    ap.add_argument("--keep", action="store_true", help="keep the input and outputs")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    src = os.path.join(args.dir, f"fastdistill_stream_{args.rows}x64.npy")
    out = os.path.join(args.dir, "fastdistill_stream_out.npz")
    if not os.path.exists(src):
        t0 = time.perf_counter()
        make_input(src, args.rows)
        print(f"wrote {src} ({os.path.getsize(src) / 2**30:.2f} GiB) in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
    cmd = [sys.executable, "-m", "fastdistill.cli", "data", "compress", src, "-o", out, "--pca", "0.95",
           "--quantize", "8", "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux reports KiB
    with open(os.path.splitext(out)[0] + ".json") as fh:
        report = json.load(fh)
    result = {"input_bytes": os.path.getsize(src), "rows": args.rows, "peak_rss_bytes": peak, "seconds": wall,
              "features_out": report["features_out"], "ratio": report["ratio"],
              "target": "peak RSS < 1 GiB", "met": peak < 2**30}
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    if not args.keep:
        for p in (src, out, os.path.splitext(out)[0] + ".json", os.path.splitext(out)[0] + ".fd"):
            if os.path.exists(p):
                os.remove(p)
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
