"""Integer codes of :class:`fastdistill.QuantizedTensor`: code ranges per scheme, code dtypes, and the bit packing
of codes narrower than 8 bits (the storage format every backend and the model files share).

A row of ``length`` codes is stored in ``row_bytes(length, bits)`` bytes: 8-bit codes as int8 (uint8 for the
asymmetric scheme); narrower codes as unsigned fields ``code + offset``, ``8 // bits`` per byte, the first element in
the lowest bits, the row's last byte padded with zero fields.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor


def qrange(bits: int, scheme: str) -> Tuple[int, int]:
    """(lowest, highest) integer code. Linear symmetric is [-qmax, qmax], qmax = 2^(bits-1) - 1 (the range is
    symmetric so that -x quantizes to -code); asymmetric is [0, 2^bits - 1]; log2 holds sign * exponent field in
    [-qmax, qmax]; 1 bit is {-1, +1}."""
    if bits == 1:
        return -1, 1
    if scheme == "asymmetric":
        return 0, (1 << bits) - 1
    qmax = (1 << (bits - 1)) - 1
    return -qmax, qmax


def field_offset(bits: int, scheme: str) -> int:
    """Packed field = code + offset (an unsigned bit field); 8-bit codes are stored as they are."""
    if bits == 8 or scheme == "asymmetric":
        return 0
    return 1 << (bits - 1)


def code_dtype(bits: int, scheme: str) -> torch.dtype:
    return torch.int8 if bits == 8 and scheme != "asymmetric" else torch.uint8


def row_bytes(length: int, bits: int) -> int:
    per = 8 // bits
    return (length + per - 1) // per


def pack(codes: Tensor, bits: int, scheme: str) -> Tensor:
    """(rows, length) int codes -> (rows, row_bytes) bytes: 8-bit codes as int8 (uint8 for asymmetric); narrower
    codes as unsigned fields ``code + offset`` (1 bit: 1 for +1, 0 for -1), the first element in the lowest bits.
    A row's last byte is padded with zero fields."""
    rows, length = codes.shape
    if bits == 8:
        return codes.to(code_dtype(bits, scheme))
    per = 8 // bits
    fields = (codes + 1) // 2 if bits == 1 else codes + field_offset(bits, scheme)
    nbytes = row_bytes(length, bits)
    padded = torch.zeros((rows, nbytes * per), dtype=torch.int32, device=codes.device)
    padded[:, :length] = fields
    shifts = torch.arange(per, device=codes.device, dtype=torch.int32) * bits
    return (padded.reshape(rows, nbytes, per) << shifts).sum(-1).to(torch.uint8)


def unpack(packed: Tensor, length: int, bits: int, scheme: str) -> Tensor:
    """Inverse of :func:`pack`: (rows, row_bytes) bytes -> (rows, length) int32 codes."""
    if bits == 8:
        return packed.to(torch.int32)
    per = 8 // bits
    shifts = torch.arange(per, device=packed.device, dtype=torch.int32) * bits
    fields = (packed.to(torch.int32)[:, :, None] >> shifts) & ((1 << bits) - 1)
    fields = fields.reshape(packed.shape[0], packed.shape[1] * per)[:, :length]
    return fields * 2 - 1 if bits == 1 else fields - field_offset(bits, scheme)


def empty_codes(rows: int, length: int, bits: int, scheme: str) -> Tuple[Tensor, Tensor, Tensor]:
    """Uninitialised (codes, scale, zero_point) outputs for ``rows`` rows of ``length`` elements (CPU)."""
    return (torch.empty((rows, row_bytes(length, bits)), dtype=code_dtype(bits, scheme)),
            torch.empty(rows, dtype=torch.float32), torch.empty(rows, dtype=torch.int32))
