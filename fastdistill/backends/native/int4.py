"""int4 linear layer backed by ``fastdistill._C`` (see csrc/cpu/int4*.cpp), and its route choice.

W4A8 (int8 dot products on the int4 codes) against W4A16 (fp32 FMA on codes widened in registers): which is faster
depends on the CPU (VNNI or not, FMA ports) and the row count, so it is measured, once per process and SIMD tier:
both kernels on a 512 x 512 weight (groups of 128) at 1 to 64 rows, interleaved, median of a few calls each. The
crossover is the smallest measured row count from which W4A8 wins at every larger one.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

from ... import _C
from ..._dispatch import register_kernel
from ..._timing import median_ms
from .._buffers import float_array

ROWS = (1, 2, 4, 8, 16, 32, 64)
_A8_MIN_ROWS: Dict[str, int] = {}
NEVER = 1 << 62


@register_kernel("int4_pack", "native")
def pack(codes: Tensor, scale: Tensor, group_size: int) -> Tensor:
    """The kernels' layout of int4 codes (N x K/2) and scales (N x K/group_size); empty when group_size is not a
    multiple of 4 (the kernels read whole groups of 4 k), which leaves such weights to the reference."""
    n, k = codes.shape[0], codes.shape[1] * 2
    if group_size % 4:
        return torch.empty(0, dtype=torch.uint8)
    packed = torch.empty(_C.int4_packed_bytes(k, n, group_size), dtype=torch.uint8)
    _C.int4_pack(codes.contiguous().numpy(), scale.contiguous().numpy(), group_size, packed.numpy(),
                 torch.get_num_threads())
    return packed


def _supports(x: Tensor, codes: Tensor, scale: Tensor, packed: Tensor, bias: Optional[Tensor], group_size: int,
              act_int8: bool) -> Optional[str]:
    if x.dtype not in (torch.float32, torch.bfloat16):
        return f"x dtype {x.dtype} not supported (float32, bfloat16)"
    k, n = codes.shape[1] * 2, codes.shape[0]
    if group_size % 4 or packed.numel() != _C.int4_packed_bytes(k, n, group_size):
        return "the weight was not packed for the native kernel (group_size must be a multiple of 4)"
    return None


def _run(x: Tensor, packed: Tensor, n: int, group_size: int, bias: Optional[Tensor], act_int8: bool) -> Tensor:
    out = torch.empty(x.shape[0], n, dtype=torch.float32)
    _C.int4_linear(float_array(x), packed.numpy(), n, group_size, None if bias is None else bias.detach().numpy(),
                   out.numpy(), act_int8, torch.get_num_threads())
    return out


@register_kernel("int4_linear", "native", supports=_supports)
def int4_linear(x: Tensor, codes: Tensor, scale: Tensor, packed: Tensor, bias: Optional[Tensor], group_size: int,
                act_int8: bool) -> Tensor:
    return _run(x, packed, codes.shape[0], group_size, bias, act_int8)


def _measure() -> int:
    gen = torch.Generator().manual_seed(0)
    k = n = 512
    g = 128
    codes = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=gen)
    packed = pack(codes, torch.rand(n, k // g, generator=gen), g)
    wins = []
    for m in ROWS:
        x = torch.randn(m, k, generator=gen)
        a8 = a16 = float("inf")
        for _ in range(3):  # interleaved: load on the machine hits both alike
            a8 = min(a8, median_ms(lambda: _run(x, packed, n, g, None, True), repeat=5, warmup=1))
            a16 = min(a16, median_ms(lambda: _run(x, packed, n, g, None, False), repeat=5, warmup=1))
        wins.append(a8 <= a16)
    threshold = NEVER
    for m, win in zip(reversed(ROWS), reversed(wins)):
        if not win:
            break
        threshold = m
    return threshold


@register_kernel("int4_a8_min_rows", "native")
def a8_min_rows() -> int:
    """From how many rows W4A8 is the faster route at the SIMD tier in use (measured once per tier)."""
    level = _C.simd_level()
    if level not in _A8_MIN_ROWS:
        _A8_MIN_ROWS[level] = _measure()
    return _A8_MIN_ROWS[level]
