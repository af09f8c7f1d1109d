"""Operand checks of the int8 kernels that index without bounds checks (Numba) or would broadcast a wrong-sized
scale silently (the torch reference): one floor below the backends. The public functions and PackedInt8Weight
check the same; these guard direct op calls and objects altered after construction."""
from __future__ import annotations

from typing import Optional

from torch import Tensor


def check_int8_operands(a: Tensor, codes: Tensor, wscale: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                        name: str = "codes") -> None:
    """ValueError unless ``a`` (M x K) and ``codes`` (N x K) agree on K and ``wscale`` / ``bias`` hold N entries."""
    if a.dim() != 2 or codes.dim() != 2 or a.shape[1] != codes.shape[1]:
        raise ValueError(f"{name}: expected (N, {a.shape[-1]}) to match the activations' K, got {tuple(codes.shape)}")
    n = codes.shape[0]
    for arg, v in (("wscale", wscale), ("bias", bias)):
        if v is not None and tuple(v.shape) != (n,):
            raise ValueError(f"{arg}: expected shape ({n},) (one per output channel), got {tuple(v.shape)}")
