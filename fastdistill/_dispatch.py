"""Backend registry and dispatch.

Every op is declared once in :mod:`fastdistill._ops`. Its implementation calls :func:`dispatch`, which picks a
kernel registered by one of the backends:

* ``python`` - the pure-torch reference (always available; also what the tests compare against),
* ``native`` - the C++ extension ``fastdistill._C`` (CPU),
* ``numba``  - Numba kernels (CPU),
* ``cuda``   - the CUDA extension ``fastdistill._cuda`` (CUDA tensors).

``auto`` walks ``native -> numba -> python`` for CPU tensors and ``cuda -> python`` for CUDA tensors and takes the
first kernel that can serve the inputs. A forced backend (``set_backend``, ``use_backend``, or the environment
variable ``FASTDISTILL_BACKEND``) never falls back silently: if it cannot serve, :class:`BackendError` lists why for
every backend.

Scope of the choice: ``set_backend`` (and ``FASTDISTILL_BACKEND``) is process-wide: every thread, including thread
pools started before or after the call, sees it. ``use_backend`` is context-local: inside the ``with`` block it
overrides the process-wide choice for the current thread (and asyncio task) only; other threads keep seeing the
process-wide choice.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

BACKENDS: Tuple[str, ...] = ("native", "numba", "python", "cuda")
CHOICES: Tuple[str, ...] = ("auto",) + BACKENDS
AUTO_ORDER: Dict[str, Tuple[str, ...]] = {"cpu": ("native", "numba", "python"), "cuda": ("cuda", "python")}
_DEFAULT_ORDER: Tuple[str, ...] = ("python",)

# Modules whose import registers each backend's kernels (imported lazily, on first dispatch to that backend).
_KERNEL_MODULES: Dict[str, Tuple[str, ...]] = {
    "python": ("fastdistill.backends.python",),
    "native": ("fastdistill.backends.native",),
    "numba": ("fastdistill.backends.numba",),
    "cuda": ("fastdistill.backends.cuda",),
}


class BackendError(RuntimeError):
    """Raised when the requested backend cannot run an op on the given inputs; the message says why, per backend."""


@dataclass
class Kernel:
    fn: Callable[..., Any]
    devices: Tuple[str, ...]
    dtypes: Optional[Tuple[torch.dtype, ...]]
    supports: Optional[Callable[..., Optional[str]]]


@dataclass
class _Registry:
    kernels: Dict[Tuple[str, str], Kernel] = field(default_factory=dict)
    loaded: Dict[str, Optional[str]] = field(default_factory=dict)  # backend -> None (ok) or why it is unusable


_REGISTRY = _Registry()
_DECLARED: Dict[str, bool] = {}  # names declared by fastdistill._ops -> whether it is an op (else a preparation step)


def declare_op(op: str, *, preparation: bool = False) -> None:
    """Called by :mod:`fastdistill._ops` for each op it declares (kernels may only be registered for declared names).
    A ``preparation`` step (packing a weight into one backend's own layout) is no op: it has no reference twin."""
    _DECLARED[op] = not preparation


def is_op(name: str) -> bool:
    """Whether ``name`` is a declared op (not a preparation step)."""
    return _DECLARED.get(name, False)


def register_kernel(
    op: str,
    backend: str,
    *,
    devices: Sequence[str] = ("cpu",),
    dtypes: Optional[Sequence[torch.dtype]] = None,
    supports: Optional[Callable[..., Optional[str]]] = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator used by backend modules: ``fn`` implements ``op`` on ``devices``.

    ``dtypes`` (if given) restricts the dtypes of every tensor argument; ``supports(*args)`` may return a reason
    string when the kernel cannot serve particular inputs (a size limit, say).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if op not in _DECLARED:  # a misspelt name would register a kernel that nothing ever dispatches to
        raise ValueError(f"op: {op!r} is not declared in fastdistill._ops (declared: {sorted(_DECLARED)})")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY.kernels[(op, backend)] = Kernel(fn, tuple(devices), tuple(dtypes) if dtypes else None, supports)
        return fn

    return deco


def _build_status() -> Dict[str, str]:
    path = os.path.join(os.path.dirname(__file__), "_build_status.json")
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _module_reason(module: str) -> Optional[str]:
    """Why the compiled module ``fastdistill.<module>`` cannot be imported, or None."""
    try:
        importlib.import_module(f"fastdistill.{module}")
        return None
    except ImportError as exc:
        built = _build_status().get(f"fastdistill.{module}")
        return f"{module} not importable ({exc})" + (f"; build: {built}" if built and built != "built" else "")


def backend_unavailable_reason(backend: str) -> Optional[str]:
    """None if ``backend`` can be used in this process, else why not. Imports the backend on first call."""
    if backend in _REGISTRY.loaded:
        return _REGISTRY.loaded[backend]
    reason: Optional[str] = None
    if backend == "native":
        reason = _module_reason("_C")
    elif backend == "cuda":
        reason = _module_reason("_cuda")
        if reason is None and not torch.cuda.is_available():
            reason = "torch.cuda.is_available() is False"
    elif backend == "numba":
        try:
            importlib.import_module("numba")
        except ImportError as exc:
            reason = f"numba not importable ({exc})"
    if reason is None:
        try:
            for mod in _KERNEL_MODULES[backend]:
                importlib.import_module(mod)
        except Exception as exc:  # a broken optional backend must not take the library down
            reason = f"loading {backend} kernels failed: {type(exc).__name__}: {exc}"
    _REGISTRY.loaded[backend] = reason
    return reason


def _tensors(args: Sequence[Any]) -> List[torch.Tensor]:
    out: List[torch.Tensor] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(t for t in a if isinstance(t, torch.Tensor))
    return out


def _device_type(args: Sequence[Any]) -> str:
    for a in args:  # the first tensor decides (the public functions check that the others are on its device)
        if isinstance(a, torch.Tensor):
            return a.device.type
        if isinstance(a, (list, tuple)):
            for t in a:
                if isinstance(t, torch.Tensor):
                    return t.device.type
    return "cpu"


def _kernel_reason(op: str, backend: str, args: Sequence[Any], device: str) -> Optional[str]:
    reason = backend_unavailable_reason(backend)
    if reason is not None:
        return reason
    kernel = _REGISTRY.kernels.get((op, backend))
    if kernel is None:
        return f"no {backend} kernel for {op}"
    if device not in kernel.devices:
        return f"runs on {'/'.join(kernel.devices)} tensors, got {device}"
    if kernel.dtypes is not None:
        bad = sorted({str(t.dtype) for t in _tensors(args) if t.dtype not in kernel.dtypes})
        if bad:
            return f"dtype {', '.join(bad)} not supported (supports {', '.join(str(d) for d in kernel.dtypes)})"
    if kernel.supports is not None:
        return kernel.supports(*args)
    return None


def _initial_backend() -> str:
    env = os.environ.get("FASTDISTILL_BACKEND", "auto").strip().lower() or "auto"
    if env not in CHOICES:
        warnings.warn(f"FASTDISTILL_BACKEND={env!r} is not one of {CHOICES}; using 'auto'", RuntimeWarning)
        return "auto"
    return env


_PROCESS_CHOICE: str = _initial_backend()  # set_backend: seen by every thread
# use_backend: a per-thread / per-task override of it (None: no override). Threads start with an empty context, so
# a worker never inherits an override, and always sees the process-wide choice.
_OVERRIDE: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("fastdistill_backend", default=None)


def _choice() -> str:
    return _OVERRIDE.get() or _PROCESS_CHOICE


def _check_choice(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in CHOICES:
        raise ValueError(f"backend: expected one of {CHOICES}, got {name!r}")
    return name.lower()


def get_backend() -> str:
    """The backend choice in effect in this thread: ``"auto"`` or a forced backend name."""
    return _choice()


def set_backend(name: str) -> None:
    """Force a backend for every op (``"native"``, ``"numba"``, ``"python"``, ``"cuda"``), or ``"auto"``, in the
    whole process: every thread (thread pools included) uses it, except inside a :func:`use_backend` block.

    Example::

        fastdistill.set_backend("python")   # run everything on the pure-torch reference
    """
    global _PROCESS_CHOICE
    _PROCESS_CHOICE = _check_choice(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force a backend inside a ``with`` block, for the current thread (or asyncio task) only: it overrides the
    process-wide :func:`set_backend` choice there; threads started inside the block, and every other thread, keep
    the process-wide choice.

    Example::

        with fastdistill.use_backend("numba"):
            mask = fastdistill.magnitude_mask(w, 0.9)
    """
    token = _OVERRIDE.set(_check_choice(name))
    try:
        yield
    finally:
        _OVERRIDE.reset(token)


_USABLE: Dict[Tuple[str, str, str], Optional[Kernel]] = {}


def _usable_kernel(op: str, backend: str, device: str) -> Optional[Kernel]:
    """``backend``'s kernel of ``op`` if the backend is usable here and the kernel runs on ``device``, worked out once
    (a per-call cost at M = 1). A backend is loaded only when a call reaches it: the first call that the native
    kernel serves never imports Numba (about 0.2 s)."""
    key = (op, backend, device)
    if key not in _USABLE:
        kernel = _REGISTRY.kernels.get((op, backend)) if backend_unavailable_reason(backend) is None else None
        _USABLE[key] = kernel if kernel is not None and device in kernel.devices else None
    return _USABLE[key]


def _candidates(op: str, choice: str, device: str) -> Iterator[Tuple[str, Kernel]]:
    """The (backend, kernel) pairs, in the order ``choice`` tries them, whose backend is usable and that run on
    ``device``."""
    for backend in AUTO_ORDER.get(device, _DEFAULT_ORDER) if choice == "auto" else (choice,):
        kernel = _usable_kernel(op, backend, device)
        if kernel is not None:
            yield backend, kernel


def select_kernel(op: str, args: Sequence[Any]) -> Tuple[str, Callable[..., Any]]:
    """The (backend, kernel) that would run ``op`` on ``args`` under the current choice; raises BackendError."""
    device = _device_type(args)
    choice = _choice()
    for backend, kernel in _candidates(op, choice, device):
        if kernel.dtypes is not None and any(t.dtype not in kernel.dtypes for t in _tensors(args)):
            continue
        if kernel.supports is None or kernel.supports(*args) is None:
            return backend, kernel.fn
    reasons = "; ".join(f"{b}: {_kernel_reason(op, b, args, device) or 'usable'}" for b in BACKENDS)
    wanted = "no backend can" if choice == "auto" else f"the forced backend {choice!r} cannot"
    raise BackendError(f"{wanted} run fastdistill::{op} on these inputs ({device}). Per backend: {reasons}")


def dispatch(op: str, *args: Any) -> Any:
    """Run ``op`` on the kernel chosen by :func:`select_kernel`."""
    return select_kernel(op, args)[1](*args)


def backend_kernel(op: str, backend: str) -> Optional[Callable[..., Any]]:
    """The kernel ``backend`` registered for ``op`` if that backend is usable in this process, else None (for
    preparation steps that only one backend needs, such as packing a weight into its own layout)."""
    if backend_unavailable_reason(backend) is not None:
        return None
    kernel = _REGISTRY.kernels.get((op, backend))
    return None if kernel is None else kernel.fn


def usable_backends(op: str, *args: Any) -> List[str]:
    """Backends that can run ``op`` on ``args`` (for tests and benchmarks)."""
    device = _device_type(args)
    return [b for b in BACKENDS if _kernel_reason(op, b, args, device) is None]
