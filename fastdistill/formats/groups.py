"""Grouped weights: a (rows, length) matrix stored as codes (packed as in :mod:`.codes`, symmetric scheme) with one
fp32 scale per group of ``group_size`` consecutive elements of a row: int4 Linear weights (groups of input channels)
and quantized embedding tables (groups of each token's vector)."""
from __future__ import annotations

from torch import Tensor

from .codes import unpack


def dequantize_grouped(codes: Tensor, scale: Tensor, length: int, bits: int, group_size: int) -> Tensor:
    """The fp32 (rows, length) matrix of symmetric ``bits``-bit ``codes`` (rows, packed bytes) with ``scale``
    (rows, length / group_size)."""
    rows = codes.shape[0]
    w = unpack(codes, length, bits, "symmetric").float()
    return (w.reshape(rows, -1, group_size) * scale.reshape(rows, -1, 1)).reshape(rows, length)
