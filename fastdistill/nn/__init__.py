"""Modules: drop-in layers built on fastdistill's ops."""
from .sparse import SparseLinear

__all__ = ["SparseLinear"]
