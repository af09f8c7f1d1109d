"""CPU time (time.process_time, all threads of the process) and wall time of the data suite's cases, ours and
scikit-learn's interleaved, both limited to THREADS threads (threadpoolctl for scikit-learn's OpenMP and BLAS).
CPU time is the robust measure on a shared machine: a thread waiting for a core costs wall time, not CPU time.

Run: ``FASTDISTILL_SIMD=avx2 python benches/data_cpu_time.py 1`` (prints one JSON line)."""
from __future__ import annotations

import json
import statistics
import sys
import time
import warnings

import numpy as np
import torch
from threadpoolctl import threadpool_limits


def measure(fns, rounds):
    """(median wall ms, median CPU ms) of each function, in interleaved rounds after one warm-up call each."""
    wall, cpu = [[] for _ in fns], [[] for _ in fns]
    for f in fns:
        f()
    for _ in range(rounds):
        for i, f in enumerate(fns):
            w, c = time.perf_counter(), time.process_time()
            f()
            wall[i].append(time.perf_counter() - w)
            cpu[i].append(time.process_time() - c)
    return [(statistics.median(w) * 1e3, statistics.median(c) * 1e3) for w, c in zip(wall, cpu)]


def main() -> None:
    warnings.simplefilter("ignore")
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    torch.set_num_threads(threads)
    threadpool_limits(threads)
    from sklearn.feature_selection import mutual_info_classif
    from sklearn.preprocessing import KBinsDiscretizer

    from fastdistill import _C
    from fastdistill.benchmarks.data import QUANT, assign_case, mi_case
    from fastdistill.data import DataQuantizer, FeatureSelector, kmeans_assign

    out = {"simd": _C.simd_level(), "threads": threads}
    X, C, km = assign_case(False)
    out["assign"] = measure([lambda: kmeans_assign(X, C), lambda: km.predict(X)], 7)
    Xm, ym = mi_case()
    sel = FeatureSelector("mutual_info", 12)
    out["mutual_info"] = measure([lambda: sel.fit(Xm, ym), lambda: mutual_info_classif(Xm, ym, random_state=0)], 3)
    Xq = np.random.default_rng(1).standard_normal(QUANT, dtype=np.float32)
    q = DataQuantizer(8).fit(Xq)
    kb = KBinsDiscretizer(256, encode="ordinal", strategy="uniform", subsample=None).fit(Xq)
    buf = np.empty_like(Xq)
    out["quantize"] = measure([lambda: q.transform(Xq), lambda: kb.transform(Xq), lambda: np.copyto(buf, Xq)], 5)
    out["load"] = open("/proc/loadavg").read().split()[:3]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
