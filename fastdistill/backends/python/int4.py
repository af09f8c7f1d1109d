"""Reference int4 linear kernel in plain torch (the semantics of :mod:`fastdistill.int4`).

W4A16: ``x.float() @ (codes * group_scale).T + bias``. W4A8: rows of x quantized as the int8 reference does, the
int8 x int4 dot product of each group exact (float64 holds it), ``sum_g float(dot_g) * wscale[:, g]`` in fp32,
times the row scale, + bias.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..._dispatch import register_kernel
from ...formats.codes import unpack
from ...formats.groups import dequantize_grouped
from .int8 import quantize_rows

DEVICES = ("cpu", "cuda")


@register_kernel("int4_linear", "python", devices=DEVICES)
def int4_linear(x: Tensor, codes: Tensor, scale: Tensor, packed: Tensor, bias: Optional[Tensor], group_size: int,
                act_int8: bool) -> Tensor:
    n, k = codes.shape[0], codes.shape[1] * 2
    if not act_int8:
        out = x.float() @ dequantize_grouped(codes, scale, k, 4, group_size).t()
        return out + bias if bias is not None else out
    m, groups = x.shape[0], k // group_size
    q, row_scale = quantize_rows(x)
    w = unpack(codes, k, 4, "symmetric").to(torch.float64).reshape(n, groups, group_size)
    dots = torch.einsum("mgk,ngk->mng", q.to(torch.float64).reshape(m, groups, group_size), w).float()
    out = (dots * scale[None]).sum(-1) * row_scale[:, None]
    return out + bias if bias is not None else out
