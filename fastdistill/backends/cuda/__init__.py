"""CUDA kernels from ``fastdistill._cuda``."""
from . import prune  # noqa: F401
