"""The ``fastdistill`` command: ``info``, ``bench``, ``demo`` (the main job on embedded data), and ``data``
(compress / inspect data files)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional


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
        print(f"  SIMD: {s['level']} (detected {s['detected']}; CPU: {feats})")
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
    print(f"machine: {bench.machine()}", file=sys.stderr)
    for row in bench.run(args.suite or None, quick=args.quick):
        rows.append(row)
        print(f"  {row.suite} {row.case}: {row.ours} {row.ours_ms:.3g} ms vs {row.peer} {row.peer_ms:.3g} ms "
              f"(x{row.ratio:.2f})", file=sys.stderr)
    print(bench.markdown(rows))
    if args.json:
        bench.write_json(rows, args.json)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(quick=args.quick)


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
    p.set_defaults(fn=_cmd_bench)
    p = sub.add_parser("demo", help="the main job: prune + distill a student on the embedded digits data")
    p.add_argument("--quick", action="store_true", help="fewer epochs")
    p.set_defaults(fn=_cmd_demo)
    from .data._cli import add_parser as add_data_parser  # data compress | data inspect

    add_data_parser(sub)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
