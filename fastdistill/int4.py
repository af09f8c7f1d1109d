"""int4 weight-only linear layers: weights as packed 4-bit codes with one fp32 scale per group of ``group_size``
input channels (the ``granularity="group"`` :class:`~fastdistill.QuantizedTensor` of a Linear weight), two ways to
multiply:

* ``activations="float"`` (W4A16): ``y = x @ dequantize(W).T + bias``, the weight expanded to float on the fly
  (in registers, natively) and multiplied in fp32. Reads 4.5 bits per weight instead of 32: the fast way at small
  batch, where a linear layer is bound by reading its weight.
* ``activations="int8"`` (W4A8): each row of ``x`` quantized to int8 on the fly (``scale = absmax / 127``, as
  :func:`fastdistill.int8_linear`); per group an exact int32 dot product of the int8 row with the int4 codes,
  ``y = sum_g float(dot_g) * wscale[n, g] * xscale[m] + bias``: integer throughput at large batch.
* ``activations="auto"``: int8 from :func:`a8_min_rows` rows on, the crossover the native backend measured on this
  CPU once per process and SIMD tier (the float path everywhere else: the reference has no fast integer product).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _ops
from ._convert import ArrayLike, check_float, like_input, to_tensor
from ._dispatch import backend_kernel, get_backend
from .int8 import checked_bias
from .quantization import QuantizedTensor

ACTIVATIONS = ("auto", "int8", "float")


class PackedInt4Weight:
    """An int4 Linear weight (N x K) ready for :func:`int4_linear`; see :func:`prepack_int4_weight`.

    ``codes``: (N, K / 2) uint8, two codes per byte (``code + 8``, the lower input channel in the low nibble);
    ``scale``: (N, K / group_size) fp32; ``packed``: the native kernel's layout (empty where it is not built).
    """

    __slots__ = ("codes", "scale", "group_size", "packed")

    def __init__(self, codes: Tensor, scale: Tensor, group_size: int, packed: Tensor):
        """Wraps existing parts, validated (see :func:`check_int4_parts`; ``packed``: 1-D uint8 on the codes'
        device, empty when not packed for the native kernel)."""
        check_int4_parts(codes, scale, group_size)
        if not isinstance(packed, Tensor) or packed.dtype != torch.uint8 or packed.dim() != 1:
            raise TypeError("packed: expected a 1-D uint8 tensor")
        if len({codes.device, scale.device, packed.device}) > 1:
            raise ValueError("codes, scale, packed: expected tensors on one device")
        self.codes, self.scale, self.group_size, self.packed = codes, scale, group_size, packed

    @property
    def shape(self) -> Tuple[int, int]:
        """(K, N): in and out features."""
        return self.codes.shape[1] * 2, self.codes.shape[0]

    def __repr__(self) -> str:
        k, n = self.shape
        return f"PackedInt4Weight(K={k}, N={n}, group_size={self.group_size})"


def check_int4_parts(codes: Tensor, scale: Tensor, group_size: int) -> None:
    """ValueError / TypeError unless ``codes`` and ``scale`` form an int4 weight with groups of ``group_size``."""
    if not isinstance(codes, Tensor) or codes.dtype != torch.uint8 or codes.dim() != 2:
        raise TypeError(f"codes: expected a 2-D uint8 tensor (two int4 codes per byte), got "
                        f"{getattr(codes, 'dtype', type(codes).__name__)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2 or group_size % 2:
        raise ValueError(f"group_size: expected an even int >= 2, got {group_size!r}")
    n, k = codes.shape[0], codes.shape[1] * 2
    if k % group_size:
        raise ValueError(f"group_size: {group_size} does not divide the {k} input features")
    if not isinstance(scale, Tensor) or scale.dtype != torch.float32 or tuple(scale.shape) != (n, k // group_size):
        got = f"{scale.dtype} {tuple(scale.shape)}" if isinstance(scale, Tensor) else type(scale).__name__
        raise ValueError(f"scale: expected float32 of shape {(n, k // group_size)}, got {got}")


def weight_parts(q: QuantizedTensor) -> Tuple[Tensor, Tensor, int]:
    """(codes (N, K/2), scale (N, K/g), g) of the 4-bit symmetric group QuantizedTensor of an (N, K) weight."""
    if q.bits != 4 or q.scheme != "symmetric" or q.granularity != "group" or q.axis != 0 or len(q.shape) != 2:
        raise ValueError(f"q: expected a 4-bit symmetric QuantizedTensor of a 2-D weight with granularity='group' and "
                         f"axis=0, got bits={q.bits}, scheme={q.scheme!r}, granularity={q.granularity!r}, "
                         f"axis={q.axis}, shape={tuple(q.shape)}")
    n, k = q.shape
    if q.group_size % 2:
        raise ValueError(f"q: group_size must be even (codes are packed in pairs), got {q.group_size}")
    return q.codes.reshape(n, k // 2), q.scale.reshape(n, k // q.group_size), q.group_size


def a8_min_rows() -> int:
    """From how many rows ``activations="auto"`` takes int8 activations: the native backend's crossover on this CPU
    (measured once per process and SIMD tier), or never where the native backend does not run the op (the
    reference has no fast integer product)."""
    threshold = backend_kernel("int4_a8_min_rows", "native") if get_backend() in ("auto", "native") else None
    return threshold() if threshold is not None else 1 << 62


def prepack_int4_weight(q: QuantizedTensor) -> PackedInt4Weight:
    """The int4 weight of a Linear layer for :func:`int4_linear`, from its 4-bit symmetric group QuantizedTensor
    (``fastdistill.quantize(w, 4, granularity="group", group_size=g)``), packed once for the native kernel.

    Example::

        >>> w = fastdistill.prepack_int4_weight(fastdistill.quantize(torch.randn(64, 256), 4, granularity="group"))
        >>> fastdistill.int4_linear(torch.randn(3, 256), w).shape
        torch.Size([3, 64])
    """
    if not isinstance(q, QuantizedTensor):
        raise TypeError(f"q: expected a QuantizedTensor, got {type(q).__name__}")
    codes, scale, g = weight_parts(q)
    return pack_parts(codes.contiguous(), scale.contiguous(), g)


def pack_parts(codes: Tensor, scale: Tensor, group_size: int) -> PackedInt4Weight:
    """:func:`prepack_int4_weight` from checked parts (what :class:`fastdistill.nn.Int4Linear` holds)."""
    check_int4_parts(codes, scale, group_size)  # before packing reads them
    pack = backend_kernel("int4_pack", "native") if codes.device.type == "cpu" else None
    packed = pack(codes, scale, group_size) if pack is not None else codes.new_empty(0)
    return PackedInt4Weight(codes, scale, group_size, packed)


def int4_linear(x: ArrayLike, qweight: PackedInt4Weight, bias: Optional[ArrayLike] = None, *,
                activations: str = "auto") -> ArrayLike:
    """``y = x @ W.T + bias`` with W held as int4 codes with group scales (see the module docstring for
    ``activations``). ``x``: (..., K) float; returns fp32 (..., N).

    Example::

        >>> lin = torch.nn.Linear(256, 64)
        >>> w = fastdistill.prepack_int4_weight(fastdistill.quantize(lin.weight, 4, granularity="group"))
        >>> y = fastdistill.int4_linear(torch.randn(8, 256), w, lin.bias, activations="float")
    """
    t = to_tensor(x, "x")
    check_float(t)
    if not isinstance(qweight, PackedInt4Weight):
        raise TypeError(f"qweight: expected a PackedInt4Weight (see prepack_int4_weight), got {type(qweight).__name__}")
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations: expected one of {ACTIVATIONS}, got {activations!r}")
    tb = checked_bias(t, qweight.shape, qweight.codes.device, bias)
    return like_input(linear_checked(t, qweight, tb, activations), x)


def linear_checked(x: Tensor, qweight: PackedInt4Weight, bias: Optional[Tensor], activations: str = "auto") -> Tensor:
    """:func:`int4_linear` on checked arguments: the per-call path of :class:`fastdistill.nn.Int4Linear`."""
    flat = x.dim() == 2
    x2 = x.detach() if flat else x.detach().reshape(math.prod(x.shape[:-1]), x.shape[-1])
    if x2.dtype not in (torch.float32, torch.bfloat16):
        x2 = x2.float()
    a8 = activations == "int8" or (activations == "auto" and x2.shape[0] >= a8_min_rows())
    out = _ops.call("int4_linear", x2.contiguous(), qweight.codes, qweight.scale, qweight.packed, bias,
                    qweight.group_size, a8)
    return out if flat else out.reshape(*x.shape[:-1], out.shape[1])
