"""The CSR weight format of :class:`fastdistill.SparseWeight`: component dtypes, decoding and validity checks.

Rows ``indptr`` (int64, rows + 1), column ``indices`` (int16 holding unsigned 16-bit patterns when cols <= 65536,
else int32) and ``values`` (float32, bfloat16, or int8 codes with one float32 ``scale`` per row).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

INDEX_DTYPES = (torch.int16, torch.int32)
VALUE_DTYPES = (torch.float32, torch.bfloat16, torch.int8)  # int8: codes with a float32 scale per row


def columns(indices: Tensor) -> Tensor:
    """Column indices as int64 (16-bit indices are stored as unsigned bit patterns in an int16 tensor)."""
    cols = indices.to(torch.int64)
    return cols & 0xFFFF if indices.dtype == torch.int16 else cols


def check_components(indptr: Tensor, cols: Tensor, values: Tensor, n_cols: int) -> None:
    """ValueError unless indptr / decoded column indices / values form a valid CSR matrix with n_cols columns."""
    if indptr.dim() != 1 or indptr.numel() < 1:
        raise ValueError("indptr: expected a 1-D tensor of rows + 1 entries")
    if cols.shape != values.shape or cols.dim() != 1:
        raise ValueError("indices, values: expected 1-D tensors of the same length")
    if int(indptr[0]) != 0 or int(indptr[-1]) != values.numel():
        raise ValueError(f"indptr: expected to run from 0 to the number of stored values ({values.numel()})")
    if indptr.numel() > 1 and bool((indptr[1:] < indptr[:-1]).any()):
        raise ValueError("indptr: expected a non-decreasing tensor")
    if cols.numel() and (int(cols.min()) < 0 or int(cols.max()) >= n_cols):
        raise ValueError(f"indices: a column index is out of range [0, {n_cols})")


def check_scale(values: Tensor, scale: Optional[Tensor], rows: int) -> None:
    """TypeError/ValueError unless ``scale`` is a finite float32 tensor of ``rows`` entries for int8 ``values``, and
    None for float values."""
    if values.dtype != torch.int8:
        if scale is not None:
            raise ValueError(f"scale: only int8 values take a scale (values are {values.dtype})")
        return
    if scale is None:
        raise ValueError("scale: int8 values need a float32 scale per row")
    if not isinstance(scale, Tensor):
        raise TypeError(f"scale: expected a torch.Tensor, got {type(scale).__name__}")
    if scale.dtype != torch.float32:
        raise TypeError(f"scale: expected float32, got {scale.dtype}")
    if scale.shape != (rows,):
        raise ValueError(f"scale: expected shape ({rows},), got {tuple(scale.shape)}")
    if not bool(torch.isfinite(scale).all()):
        raise ValueError("scale: expected finite values")


def dequantized(indptr: Tensor, codes: Tensor, scale: Tensor) -> Tensor:
    """int8 CSR values as float32: each code times its row's scale."""
    return codes.float() * torch.repeat_interleave(scale, indptr.diff(), output_size=codes.numel())
