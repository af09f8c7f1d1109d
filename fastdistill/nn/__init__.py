"""Modules: drop-in layers built on fastdistill's ops."""
from .int8 import Int8Linear
from .sparse import SparseLinear

__all__ = ["Int8Linear", "SparseLinear"]
