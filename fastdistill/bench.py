"""Op-versus-peer benchmarks, run in one process: warm-up, median of repeats, ratio column.

``fastdistill bench`` prints a markdown table (``--json PATH`` writes the rows). Each op family registers a suite
with :func:`suite`; a suite yields :class:`Row` objects built with :func:`compare`. Ratios are the peer's median
time over ours (> 1 means fastdistill is faster); ``x floor`` is ours over a memory-bound floor where one applies.
``--simd LEVEL[,LEVEL]|all`` runs every suite at each of those native SIMD levels (switched in-process); the table
then has one column per level. The peers (torch, NumPy) keep their own best code paths at every level.
"""
from __future__ import annotations

import contextlib
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
    simd: Optional[str] = None  # native SIMD level the row ran at (None without the native module)
    note: Optional[str] = None  # a measurement that is not a time (e.g. peak memory)


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
    note: Optional[str] = None,
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
               (ms[0] / floor_ms) if floor_ms else None, target, note=note)


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> Dict[str, object]:
    import fastdistill

    inf = fastdistill.info()
    return {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "simd": inf.get("simd", {}).get("level"), "simd_supported": supported_levels(),
            "fastdistill": inf["version"]}


def _native():
    from ._dispatch import backend_unavailable_reason

    if backend_unavailable_reason("native") is not None:
        return None
    from . import _C

    return _C


def supported_levels() -> List[str]:
    """Native SIMD levels this build and CPU run, lowest first ([] without the native module)."""
    c = _native()
    return list(c.supported_simd_levels()) if c else []


def simd_levels(spec: Optional[str]) -> List[Optional[str]]:
    """The levels ``--simd spec`` asks for: None -> the level in use now; "all" -> every supported level, best first;
    "avx2,scalar" -> those. Raises ValueError for a level this CPU or build does not run."""
    c = _native()
    if spec is None:
        return [c.simd_level() if c else None]
    supported = supported_levels()
    if spec == "all":
        return list(reversed(supported)) or [None]
    levels = [s.strip() for s in spec.split(",") if s.strip()]
    for level in levels:
        if level not in supported:
            raise ValueError(f"simd: expected 'all' or levels among {supported} (this CPU and build), got {level!r}")
    return levels


@contextlib.contextmanager
def at_simd_level(level: Optional[str]) -> Iterator[None]:
    """Runs the native kernels at ``level`` (None: unchanged) inside the block."""
    c = _native()
    if level is None or c is None:
        yield
        return
    before = c.simd_level()
    c.set_simd_level(level)
    try:
        yield
    finally:
        c.set_simd_level(before)


def suite_names(names: Optional[List[str]] = None) -> List[str]:
    """``names`` checked against the registered suites (ValueError naming them), or every suite."""
    _load_suites()
    for name in names or ():
        if name not in SUITES:
            raise ValueError(f"suite: expected one of {sorted(SUITES)}, got {name!r}")
    return list(names or SUITES)


def run(names: Optional[List[str]] = None, quick: bool = False,
        levels: Optional[List[Optional[str]]] = None) -> Iterator[Row]:
    """Rows of the named suites (default: all), at each of ``levels`` in turn (default: the level in use)."""
    names = suite_names(names)
    for level in levels or simd_levels(None):
        with at_simd_level(level):
            for name in names:
                for row in SUITES[name](quick):
                    row.simd = level
                    yield row


def _load_suites() -> None:
    from .benchmarks import compress, data, distill, int8, kd, prune, quant, sparse  # noqa: F401  (registers suites)


def _cell(text: Optional[str]) -> str:
    return (text or "-").replace("|", "\\|")  # a pipe inside a cell would end it


def markdown(rows: List[Row]) -> str:
    """The rows as a markdown table; rows of several SIMD levels get one column per level (peer/ours, ours ms,
    ours over the floor)."""
    levels = list(dict.fromkeys(r.simd for r in rows))
    title = f"CPU: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    if len(levels) <= 1:
        head = "| suite | case | ours | ours ms | peer | peer ms | peer/ours | floor ms | x floor | target |"
        lines = [f"{title}, SIMD level {levels[0] if levels else None}", "", head, "|" + "---|" * 10]
        for r in rows:
            floor = f"{r.floor_ms:.3g}" if r.floor_ms else "-"
            xf = f"{r.x_floor:.2f}" if r.x_floor else "-"
            case = f"{r.case} ({r.note})" if r.note else r.case
            lines.append(f"| {r.suite} | {_cell(case)} | {_cell(r.ours)} | {r.ours_ms:.3g} | {_cell(r.peer)} | "
                         f"{r.peer_ms:.3g} | {r.ratio:.2f} | {floor} | {xf} | {_cell(r.target)} |")
        return "\n".join(lines)
    cells: Dict[tuple, Dict[Optional[str], Row]] = {}
    for r in rows:  # one line per (suite, case, ours, peer), in first-seen order
        cells.setdefault((r.suite, r.case, r.ours, r.peer, r.target), {})[r.simd] = r
    head = "| suite | case | ours | peer | target | " + " | ".join(f"{lv}: peer/ours (ours ms, x floor)"
                                                                    for lv in levels) + " |"
    lines = [title, "", head, "|" + "---|" * (5 + len(levels))]
    for (suite_name, case, ours, peer, target), by_level in cells.items():
        vals = []
        for lv in levels:
            r = by_level.get(lv)
            if r is None:
                vals.append("-")
                continue
            xf = f", {r.x_floor:.2f}x floor" if r.x_floor else ""
            note = f"; {r.note}" if r.note else ""
            vals.append(f"{r.ratio:.2f} ({r.ours_ms:.3g} ms{xf}{note})")
        lines.append(f"| {suite_name} | {_cell(case)} | {_cell(ours)} | {_cell(peer)} | {_cell(target)} | "
                     + " | ".join(vals) + " |")
    return "\n".join(lines)


def write_json(rows: List[Row], path: str) -> None:
    with open(path, "w") as fh:
        json.dump({"machine": machine(), "rows": [asdict(r) for r in rows]}, fh, indent=1)
