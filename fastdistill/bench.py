"""Op-versus-peer benchmarks, run in one process: warm-up, median of repeats, ratio column.

``fastdistill bench`` prints a markdown table (``--json PATH`` writes the rows). Each op family registers a suite
with :func:`suite`; a suite yields :class:`Row` objects built with :func:`compare`. Ratios are the peer's median
time over ours (> 1 means fastdistill is faster); ``x floor`` is ours over a memory-bound floor where one applies.
"""
from __future__ import annotations

import gc
import json
import platform
import statistics
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional

import torch

from ._timing import median_ms

SUITES: Dict[str, Callable[[bool], Iterable["Row"]]] = {}


@dataclass
class Row:
    suite: str
    case: str
    ours: str
    ours_ms: float
    peer: str
    peer_ms: float
    ratio: float  # peer_ms / ours_ms
    floor: Optional[str] = None
    floor_ms: Optional[float] = None
    x_floor: Optional[float] = None  # ours_ms / floor_ms
    target: Optional[str] = None


def suite(name: str) -> Callable[[Callable[[bool], Iterable[Row]]], Callable[[bool], Iterable[Row]]]:
    """Register a benchmark suite: ``fn(quick) -> rows``."""

    def deco(fn: Callable[[bool], Iterable[Row]]) -> Callable[[bool], Iterable[Row]]:
        SUITES[name] = fn
        return fn

    return deco


def compare(
    suite_name: str,
    case: str,
    ours: Callable[[], object],
    peer: Callable[[], object],
    *,
    ours_name: str,
    peer_name: str,
    floor: Optional[Callable[[], object]] = None,
    floor_name: Optional[str] = None,
    target: Optional[str] = None,
    repeat: int = 15,
) -> Row:
    """Time ours, the peer and (optionally) a floor, interleaved in rounds so drift hits all of them alike."""
    fns = [ours, peer] + ([floor] if floor else [])
    for fn in fns:
        fn()  # warm-up
    samples: List[List[float]] = [[] for _ in fns]
    per_round = max(1, min(3, repeat // 3))  # slow cases (small repeat) take one call per round
    for _ in range(max(3, repeat // per_round)):
        for i, fn in enumerate(fns):
            samples[i].append(median_ms(fn, repeat=per_round, warmup=0))
    ms = [statistics.median(s) for s in samples]
    gc.collect()
    floor_ms = ms[2] if floor else None
    return Row(suite_name, case, ours_name, ms[0], peer_name, ms[1], ms[1] / ms[0], floor_name, floor_ms,
               (ms[0] / floor_ms) if floor_ms else None, target)


def machine() -> Dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import fastdistill

    inf = fastdistill.info()
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "simd": inf.get("simd", {}).get("level"), "fastdistill": inf["version"]}


def run(names: Optional[List[str]] = None, quick: bool = False) -> Iterator[Row]:
    _load_suites()
    for name in names or list(SUITES):
        if name not in SUITES:
            raise ValueError(f"suite: expected one of {sorted(SUITES)}, got {name!r}")
        yield from SUITES[name](quick)


def _load_suites() -> None:
    from .benchmarks import compress, int8, kd, prune, quant, sparse  # noqa: F401  (registers their suites)


def markdown(rows: List[Row]) -> str:
    head = "| suite | case | ours | ours ms | peer | peer ms | peer/ours | floor ms | x floor | target |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        floor = f"{r.floor_ms:.3g}" if r.floor_ms else "-"
        xf = f"{r.x_floor:.2f}" if r.x_floor else "-"
        lines.append(f"| {r.suite} | {r.case} | {r.ours} | {r.ours_ms:.3g} | {r.peer} | {r.peer_ms:.3g} | "
                     f"{r.ratio:.2f} | {floor} | {xf} | {r.target or '-'} |")
    return "\n".join(lines)


def write_json(rows: List[Row], path: str) -> None:
    with open(path, "w") as fh:
        json.dump({"machine": machine(), "rows": [asdict(r) for r in rows]}, fh, indent=1)
