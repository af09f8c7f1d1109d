"""Modules: drop-in layers built on fastdistill's ops."""
from .int8 import Int8Linear
from .kd import FusedLinearKDLoss, KDLoss
from .sparse import SparseLinear

__all__ = ["FusedLinearKDLoss", "Int8Linear", "KDLoss", "SparseLinear"]
