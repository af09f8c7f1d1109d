"""Bounded-memory benchmark: `fastdistill data compress` on a 4 GB .npy (16M x 64 float32, low-rank plus noise)
with PCA to 95% variance and 8-bit quantization, in a child process that reports its own peak resident memory
(VmHWM of its address space: ru_maxrss would also count the parent's resident pages at fork). Target: < 1 GB.

Run: ``python benches/data_stream_4gb.py [--dir DIR] [--rows N] [--keep]`` (about 4 GB of disk in DIR, default the
system temp folder; the input is written once and reused while it exists)."""
from __future__ import annotations

import argparse
import json
import os
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


# The command in the child, which then prints its own peak resident memory.
CHILD = ("import sys; from fastdistill.cli import main; rc = main(sys.argv[1:]); "
         "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]); sys.exit(rc)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make", help=argparse.SUPPRESS)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--rows", type=int, default=16_000_000)
    ap.add_argument("--keep", action="store_true", help="keep the input and outputs")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    if args.make:
        make_input(args.make, args.rows)
        return 0
    src = os.path.join(args.dir, f"fastdistill_stream_{args.rows}x64.npy")
    out = os.path.join(args.dir, "fastdistill_stream_out.npz")
    if not os.path.exists(src):  # (in a child too: this process stays small, whatever the input)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--make", src, "--rows", str(args.rows)], check=True)
        print(f"wrote {src} ({os.path.getsize(src) / 2**30:.2f} GiB) in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
    cmd = [sys.executable, "-c", CHILD, "data", "compress", src, "-o", out, "--pca", "0.95", "--quantize", "8",
           "--quiet"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = int(done.stdout.split("VmHWM:")[1].split()[0]) * 1024  # kB
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
