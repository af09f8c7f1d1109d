"""What this installation can do: version, backends built and usable, the kernels each op has, SIMD level, threads,
CUDA."""
from __future__ import annotations

import importlib
import os
from typing import Any, Dict, List

import torch

from . import __version__
from ._dispatch import _REGISTRY, BACKENDS, _build_status, backend_unavailable_reason, get_backend, is_op


def info() -> Dict[str, Any]:
    """A dict describing this installation (also printed by the ``fastdistill info`` command).

    Example::

        >>> fastdistill.info()["backends"]["python"]["usable"]
        True
    """
    backends = {}
    for name in BACKENDS:
        reason = backend_unavailable_reason(name)
        backends[name] = {"usable": reason is None, "reason": reason}
    ops: Dict[str, List[str]] = {}
    for op, backend in _REGISTRY.kernels:  # kernels of the usable backends (each registers on import)
        if is_op(op):
            ops.setdefault(op, []).append(backend)
    out: Dict[str, Any] = {
        "version": __version__,
        "torch": torch.__version__,
        "backend_choice": get_backend(),
        "backends": backends,
        "build": _build_status(),
        "ops": {op: [b for b in BACKENDS if b in ops[op]] for op in sorted(ops)},
        "threads": torch.get_num_threads(),
        "cuda": {"torch_cuda_available": torch.cuda.is_available(),
                 "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }
    if backends["native"]["usable"]:
        from . import _C

        out["simd"] = {"level": _C.simd_level(), "detected": _C.detected_simd_level(),
                       "cpu_features": dict(_C.cpu_features()), "openmp_max_threads": _C.max_threads()}
    if backends["numba"]["usable"]:
        numba = importlib.import_module("numba")
        out["numba"] = {"version": numba.__version__, "threads": numba.config.NUMBA_NUM_THREADS}
    out["env"] = {k: v for k, v in os.environ.items() if k.startswith("FASTDISTILL_")}
    return out
