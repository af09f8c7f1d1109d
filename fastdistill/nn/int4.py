"""``Int4Linear``: a drop-in ``nn.Linear`` replacement holding its weight as packed int4 codes with one fp32 scale per
group of input channels (4.25 bits per weight at group size 128), run by :func:`fastdistill.int4_linear`."""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor, nn

from ..formats.groups import dequantize_grouped
from ..int4 import ACTIVATIONS, PackedInt4Weight, linear_checked, pack_parts, weight_parts
from ..quantization import QuantizedTensor, quantize
from ._packed import PackedWeightModule, check_linear_input


def group_size_for(in_features: int, group_size: int) -> int:
    """The group size a layer of ``in_features`` inputs uses: ``group_size``, or the whole row when it is shorter.
    ValueError when ``group_size`` does not divide ``in_features``."""
    g = min(group_size, in_features)
    if in_features % g or g % 2:
        raise ValueError(f"group_size: {group_size} does not divide the {in_features} input features into groups "
                         "of an even size")
    return g


class Int4Linear(PackedWeightModule):
    """y = x @ W.T + b with W held as int4 codes with group scales; forward = :func:`fastdistill.int4_linear`.

    Buffers (what ``state_dict`` holds): ``weight_int4`` (out x in/2 uint8, two codes per byte), ``weight_scale``
    (out x in/group_size fp32) and ``bias`` (out fp32 or None). ``activations``: ``"auto"`` (int8 activations from
    the measured crossover batch size on, float below it), ``"int8"`` or ``"float"`` (see :mod:`fastdistill.int4`).
    Outputs are fp32 for fp32 inputs and cast back to the input dtype otherwise.

    Example::

        >>> q = Int4Linear.from_float(torch.nn.Linear(256, 64), group_size=128)
        >>> q(torch.randn(8, 256)).shape
        torch.Size([8, 64])
    """

    FP32_BUFFERS = ("weight_scale", "bias")

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, group_size: int = 128,
                 activations: str = "auto"):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.group_size = group_size_for(self.in_features, group_size)
        if activations not in ACTIVATIONS:
            raise ValueError(f"activations: expected one of {ACTIVATIONS}, got {activations!r}")
        self.activations = activations
        self.register_buffer("weight_int4", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.zeros(out_features, in_features // self.group_size))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_float(cls, linear: nn.Linear, *, group_size: int = 128, scale_method: str = "absmax",
                   activations: str = "auto", fisher: Optional[Tensor] = None) -> "Int4Linear":
        """Quantizes ``linear``'s weight to symmetric int4 codes ([-7, 7]) with one scale per group of
        ``group_size`` input channels (the whole row if it is shorter), chosen by ``scale_method`` (see
        :func:`fastdistill.quantize`; ``"fisher"`` with ``fisher``, the weight's shape)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        g = group_size_for(linear.in_features, group_size)
        q = quantize(linear.weight.detach().float(), 4, granularity="group", group_size=g, scale_method=scale_method,
                     fisher=fisher)
        return cls.from_quantized(q, linear.bias, activations=activations)

    @classmethod
    def from_quantized(cls, q: QuantizedTensor, bias: Optional[Tensor] = None, *,
                       activations: str = "auto") -> "Int4Linear":
        """An Int4Linear holding the 4-bit symmetric group QuantizedTensor ``q`` of an (out x in) weight (scales
        chosen by any method, e.g. ``compress.quantize(..., scale_method="fisher")``)."""
        codes, scale, g = weight_parts(q)
        n, k = q.shape
        mod = cls(k, n, bias is not None, group_size=g, activations=activations)
        mod.to(codes.device)
        mod.weight_int4.copy_(codes)
        mod.weight_scale.copy_(scale)
        if bias is not None:
            mod.bias.copy_(bias.detach().float())
        mod._repack()
        return mod

    @classmethod
    def for_state(cls, module: nn.Module, state: Mapping[str, Tensor], prefix: str) -> "Int4Linear":
        """An empty Int4Linear shaped to take the ``state`` entries under ``prefix`` (for ``fastdistill.load``)."""
        codes, scale = state[prefix + "weight_int4"], state[prefix + "weight_scale"]
        k = codes.shape[1] * 2
        return cls(k, codes.shape[0], prefix + "bias" in state, group_size=k // max(scale.shape[1], 1))

    def _pack(self) -> PackedInt4Weight:
        return pack_parts(self.weight_int4, self.weight_scale, self.group_size)

    @property
    def weight(self) -> Tensor:
        """The dequantized fp32 weight (computed on each access)."""
        return dequantize_grouped(self.weight_int4, self.weight_scale, self.in_features, 4, self.group_size)

    def forward(self, x: Tensor) -> Tensor:
        check_linear_input(x, self.in_features)
        y = linear_checked(x, self.packed, self.bias, self.activations)
        return y if x.dtype == torch.float32 else y.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"bits=4, group_size={self.group_size}, activations={self.activations!r}")
