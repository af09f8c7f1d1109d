"""C++ kernels from ``fastdistill._C`` (CPU, OpenMP, run-time SIMD dispatch)."""
from . import prune  # noqa: F401
from . import int8  # noqa: F401
