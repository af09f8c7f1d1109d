"""The ``fastdistill`` command: ``info``, ``bench``, ``demo`` (the main job on embedded data), and ``data``
(compress / inspect data files)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional


def _route_evidence(route: dict) -> str:
    """The measurement behind a route choice, as 'rows: a vs b ms' pairs (or the reason no measurement ran)."""
    if "timings_ms" not in route:
        return route.get("reason", "not measured")
    return "measured " + ", ".join(f"{k}: {a:.3g} vs {b:.3g} ms" for k, (a, b) in route["timings_ms"].items())


def _cmd_info(args: argparse.Namespace) -> int:
    import fastdistill

    inf = fastdistill.info()
    if args.json:
        print(json.dumps(inf, indent=1))
        return 0
    print(f"fastdistill {inf['version']} (torch {inf['torch']}), backend choice: {inf['backend_choice']}")
    for name, b in inf["backends"].items():
        print(f"  {name:7s} {'usable' if b['usable'] else 'unavailable: ' + str(b['reason'])}")
    width = max(map(len, inf["ops"]), default=0)
    for op, backends in inf["ops"].items():
        print(f"  op {op:{width}s}  {' '.join(backends)}")
    if "simd" in inf:
        s = inf["simd"]
        feats = ", ".join(k for k, v in s["cpu_features"].items() if v)
        print(f"  SIMD: {s['level']} (detected {s['detected']}, supported {', '.join(s['supported'])}; CPU: {feats})")
        k = s["int8_kernels"]
        print(f"  int8 GEMM kernel: {k['symmetric_weights']} (weights in [-127, 127]), {k['any_int8']} (any int8)")
    if "routes" in inf:
        r = inf["routes"]["int8_linear"]
        rows = r["int_mm_min_rows"]
        print("  route int8_linear: " + ("own kernel at every batch size" if rows is None else
                                         f"torch._int_mm from {rows} rows") + f" ({_route_evidence(r)})")
        r = inf["routes"]["sparse_linear"]
        print(f"  route sparse_linear: gather dot products up to {r['gather_max_batch']} samples, tiled beyond "
              f"({_route_evidence(r)})")
    print(f"  threads: torch {inf['threads']}" + (f", OpenMP {inf['simd']['openmp_max_threads']}" if "simd" in inf
                                                 else ""))
    cuda = inf["cuda"]
    print(f"  CUDA: {'available, ' + str(cuda['device']) if cuda['torch_cuda_available'] else 'not available'}")
    for mod, status in inf["build"].items():
        print(f"  build {mod}: {status}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = []
    try:
        levels = bench.simd_levels(args.simd)
        names = bench.suite_names(args.suite)
    except ValueError as exc:
        print(f"fastdistill bench: {exc}", file=sys.stderr)
        return 2
    print(f"machine: {bench.machine()}", file=sys.stderr)
    for row in bench.run(names, quick=args.quick, levels=levels):
        rows.append(row)
        print(f"  [{row.simd}] {row.suite} {row.case}: {row.ours} {row.ours_ms:.3g} ms vs {row.peer} "
              f"{row.peer_ms:.3g} ms (x{row.ratio:.2f})", file=sys.stderr)
    print(bench.markdown(rows))
    if args.json:
        bench.write_json(rows, args.json)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(quick=args.quick, seeds=args.seeds, out=args.out or None, threads=args.threads,
                     progress=args.progress)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="fastdistill", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="version, backends built/usable, SIMD level, threads, CUDA")
    p.add_argument("--json", action="store_true", help="print the info dict as JSON")
    p.set_defaults(fn=_cmd_info)
    p = sub.add_parser("bench", help="op-versus-peer benchmarks (markdown table on stdout)")
    p.add_argument("suite", nargs="*", help="suites to run (default: all)")
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    p.add_argument("--json", metavar="PATH", help="also write the rows and the machine to PATH")
    p.add_argument("--threads", type=int, default=0, help="torch/OpenMP threads (default: torch's)")
    p.add_argument("--simd", metavar="LEVEL", default=None,
                   help="native SIMD level(s) to run at: 'all' (every level this CPU supports, one column each), or "
                        "e.g. 'avx2' or 'avx512,avx2' (default: the level in use, see FASTDISTILL_SIMD)")
    p.set_defaults(fn=_cmd_bench)
    p = sub.add_parser("demo", help="the main job: distill, prune and quantize a student on the embedded digits data")
    p.add_argument("--quick", action="store_true", help="fewer epochs (under 30 s)")
    p.add_argument("--seeds", type=int, default=3, help="seeds to average over (default 3)")
    p.add_argument("--out", default="fastdistill-demo", metavar="DIR",
                   help="where report.json and the PNG go (default ./fastdistill-demo; '' writes nothing)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the models are tiny)")
    p.add_argument("--progress", action="store_true", help="a progress bar per training epoch")
    p.set_defaults(fn=_cmd_demo)
    from .data._cli import add_parser as add_data_parser  # data compress | data inspect

    add_data_parser(sub)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
