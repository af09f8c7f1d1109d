"""Wall-clock timing shared by the benchmark harness and by library code that measures before it decides (e.g.
:func:`fastdistill.compress.sparsify`, route choices of the native backend)."""
from __future__ import annotations

import statistics
import time
from typing import Callable, List


def median_ms(fn: Callable[[], object], repeat: int = 15, warmup: int = 3, min_time: float = 0.0) -> float:
    """Median wall time of ``fn()`` in milliseconds after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start < min_time and len(times) < 10 * repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3
