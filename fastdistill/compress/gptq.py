"""GPTQ rounding of Linear weights (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers", 2023): weights are rounded one input column at a time and each column's rounding error
is pushed onto the columns not yet rounded, weighted by the inverse Hessian ``H = X^T X`` of the layer's calibration
inputs, so that the layer's *outputs* on those inputs move as little as possible (round-to-nearest minimises the
error of each weight on its own instead).

Codes, scales and rounding follow :func:`fastdistill.quantize` (symmetric, ``scale = clip / qmax``, round half to
even, clamp to ``[-qmax, qmax]``); each group's scale is chosen (``scale_method``) from the group's weights as they
stand when the group is reached, after the updates from the columns before it.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable

import torch
from torch import Tensor, nn

from ..formats.codes import pack
from ..quantization import QuantizedTensor, quantize
from .structure import run_hooked


def input_hessians(model: nn.Module, layers: Dict[str, nn.Linear], batches: Iterable[Any]) -> Dict[str, Tensor]:
    """{layer name: X^T X (in x in, fp64) of its inputs over the calibration batches}."""
    hessians: Dict[str, Tensor] = {}

    def hook(name):
        def record(module, args):
            x = args[0].detach().reshape(-1, module.in_features).double()
            h = x.t() @ x
            hessians[name] = hessians[name] + h if name in hessians else h
        return record

    run_hooked(model, batches, [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()])
    missing = [n for n in layers if n not in hessians]
    if missing:
        raise ValueError(f"calibration: layers {missing[:5]} were not reached by any calibration batch")
    return hessians


def gptq_quantize(weight: Tensor, hessian: Tensor, bits: int, group_size: int, *, scale_method: str = "absmax",
                  damp: float = 0.01) -> QuantizedTensor:
    """The ``bits``-bit symmetric group QuantizedTensor (``granularity="group"``, ``axis=0``) of the (out x in)
    ``weight`` with GPTQ rounding for the input Hessian ``hessian`` (in x in). ``damp``: the fraction of the mean
    diagonal added to it (numerical stability)."""
    qmax = (1 << (bits - 1)) - 1
    w = weight.detach().double().clone()
    n, k = w.shape
    h = hessian.double().clone()
    dead = torch.diagonal(h) == 0  # inputs that were always zero: their weights do not matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * torch.diagonal(h).mean() * torch.eye(k, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    codes = torch.empty(n, k, dtype=torch.int32)
    scales = torch.empty(n, k // group_size, dtype=torch.float32)
    for g0 in range(0, k, group_size):
        g1 = g0 + group_size
        block = w[:, g0:g1].clone()
        errors = torch.empty_like(block)
        hb = hinv[g0:g1, g0:g1]
        s = quantize(block.float(), bits, granularity="channel", scale_method=scale_method).scale
        scales[:, g0 // group_size] = s
        sd = s.double()
        for i in range(group_size):
            col = block[:, i]
            q = torch.clamp(torch.round((col.float() / s).double()), -qmax, qmax)
            codes[:, g0 + i] = q.to(torch.int32)
            err = (col - q * sd) / hb[i, i]
            block[:, i:] -= err[:, None] * hb[i, i:][None, :]
            errors[:, i] = err
        w[:, g1:] -= errors @ hinv[g0:g1, g1:]
    packed = pack(codes.reshape(-1, group_size), bits, "symmetric")
    return QuantizedTensor(packed, scales.reshape(-1), torch.zeros(scales.numel(), dtype=torch.int32), bits=bits,
                           scheme="symmetric", granularity="group", axis=0, group_size=group_size, shape=(n, k),
                           dtype=weight.dtype)
