"""Modules: drop-in layers built on fastdistill's ops."""
from .conv import Int8Conv2d
from .embedding import QuantizedEmbedding
from .int4 import Int4Linear
from .int8 import Int8Linear
from .kd import FusedLinearKDLoss, KDLoss
from .sparse import SparseLinear

__all__ = ["FusedLinearKDLoss", "Int4Linear", "Int8Conv2d", "Int8Linear", "KDLoss", "QuantizedEmbedding",
           "SparseLinear"]
