"""int8 matrix multiply and the dynamic-quantization linear layer (int8 weights, int8 activations, fp32 output).

* :func:`int8_mm` - int8 x int8 -> int32, exact (sums wrap modulo 2^32, so exact whenever the product fits in
  int32: always for K <= 131072).
* :func:`prepack_int8_weight` - int8 codes (with optional scales), or the :class:`~fastdistill.QuantizedTensor` of a
  Linear weight, packed once into the native kernel's layout.
* :func:`int8_linear` - activations quantized per row (per token) on the fly, int8 GEMM, dequantized (+ bias) to fp32.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _ops
from ._convert import ArrayLike, check_float, like_input, to_tensor
from ._dispatch import backend_kernel
from .quantization import QuantizedTensor


class PackedInt8Weight:
    """An int8 matrix B (K x N) prepacked for :func:`int8_mm` / :func:`int8_linear`; see :func:`prepack_int8_weight`.

    ``codes`` is B transposed (N x K, contiguous: the layout of a ``nn.Linear`` weight); ``scale`` the per-column
    (per-output-channel) fp32 scales or None; ``packed``/``comp`` the native kernel's panels and shift compensation
    (empty where the native backend is not built; the other backends read ``codes``).
    """

    __slots__ = ("codes", "scale", "packed", "comp")

    def __init__(self, codes: Tensor, scale: Optional[Tensor], packed: Tensor, comp: Tensor):
        """Wraps existing parts, validated (the kernels read N x K codes, N scales and, on the native backend, the
        panels for that K x N): ``codes`` int8 (N, K) contiguous; ``scale`` None or float32 (N,); ``packed`` int8
        and ``comp`` int32, 1-D (empty when not packed for the native kernel); all on one device."""
        for name, t, dtype in (("codes", codes, torch.int8), ("packed", packed, torch.int8),
                               ("comp", comp, torch.int32), ("scale", scale, torch.float32)):
            if t is None and name == "scale":
                continue
            if not isinstance(t, Tensor):
                raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
            if t.dtype != dtype:
                raise TypeError(f"{name}: expected {dtype}, got {t.dtype}")
            if not t.is_contiguous() or t.dim() != (2 if name == "codes" else 1):
                raise ValueError(f"{name}: expected a contiguous {2 if name == 'codes' else 1}-D tensor, got shape "
                                 f"{tuple(t.shape)}")
        if scale is not None and scale.shape != (codes.shape[0],):
            raise ValueError(f"scale: expected shape ({codes.shape[0]},) (one per output channel, codes' rows), got "
                             f"{tuple(scale.shape)}")
        if len({t.device for t in (codes, scale, packed, comp) if t is not None}) > 1:
            raise ValueError("codes, scale, packed, comp: expected tensors on one device")
        self.codes, self.scale, self.packed, self.comp = codes, scale, packed, comp

    @property
    def shape(self) -> Tuple[int, int]:
        """(K, N) of B."""
        return self.codes.shape[1], self.codes.shape[0]

    def __repr__(self) -> str:
        k, n = self.shape
        return f"PackedInt8Weight(K={k}, N={n}, scales={'per-channel' if self.scale is not None else 'none'})"


def _linear_weight_codes(q: QuantizedTensor) -> Tuple[Tensor, Tensor]:
    """(codes N x K, scale N) of the QuantizedTensor of an (N x K) weight with one scale per output channel."""
    if q.bits != 8 or q.scheme != "symmetric" or len(q.shape) != 2:
        raise ValueError(f"b: expected an 8-bit symmetric QuantizedTensor of a 2-D weight, got bits={q.bits}, "
                         f"scheme={q.scheme!r}, shape={q.shape}")
    n = q.shape[0]
    if q.granularity == "tensor":
        return q.codes.reshape(q.shape), q.scale.expand(n).contiguous()
    if q.granularity == "channel" and q.axis == 0:
        return q.codes, q.scale
    raise ValueError(f"b: expected granularity 'channel' with axis=0 or 'tensor' (one scale per output channel), "
                     f"got granularity={q.granularity!r}, axis={q.axis}")


def prepack_int8_weight(b: "ArrayLike | QuantizedTensor", scale: Optional[ArrayLike] = None, *,
                        transposed: bool = False) -> PackedInt8Weight:
    """Packs an int8 matrix B (K x N; or N x K with ``transposed=True``, e.g. int8 codes of an ``nn.Linear`` weight)
    once for repeated :func:`int8_mm` / :func:`int8_linear` calls. ``scale``: N fp32 per-column scales (needed by
    :func:`int8_linear`). ``b`` may instead be the :class:`~fastdistill.QuantizedTensor` of an (N x K) Linear weight
    (8-bit symmetric, ``granularity="channel"`` with ``axis=0``, or ``"tensor"``): its codes and scales are used.

    Example::

        >>> q = fastdistill.quantize(torch.randn(64, 32), 8, granularity="channel")
        >>> w = prepack_int8_weight(q)
        >>> int8_linear(torch.randn(5, 32), w).shape
        torch.Size([5, 64])
    """
    if isinstance(b, QuantizedTensor):
        if scale is not None:
            raise ValueError("scale: must be None when b is a QuantizedTensor (its scales are used)")
        b, scale = _linear_weight_codes(b)
        transposed = True
    t = to_tensor(b, "b")
    if t.dtype != torch.int8:
        raise TypeError(f"b: expected an int8 tensor, got {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"b: expected a 2-D matrix, got shape {tuple(t.shape)}")
    codes = (t if transposed else t.t()).detach().contiguous()
    s = None
    if scale is not None:
        s = to_tensor(scale, "scale").detach().to(device=codes.device, dtype=torch.float32).contiguous()
        if s.shape != (codes.shape[0],):
            raise ValueError(f"scale: expected shape ({codes.shape[0]},) (one per column of B), got {tuple(s.shape)}")
    packed = comp = codes.new_empty(0)
    # The native kernel's own panel layout, made whenever that backend is usable (not only when it is chosen now),
    # so that a weight packed under a forced backend still runs natively later; the other backends read ``codes``.
    pack = backend_kernel("int8_pack", "native") if codes.device.type == "cpu" else None
    if pack is not None:
        packed, comp = pack(codes.t())
    w = PackedInt8Weight(codes, s, packed, comp.to(torch.int32))
    return w


def _check_int8_matrix(t: Tensor, name: str) -> None:
    if t.dtype != torch.int8:
        raise TypeError(f"{name}: expected an int8 tensor, got {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D matrix, got shape {tuple(t.shape)}")


def int8_mm(a: ArrayLike, b: "ArrayLike | PackedInt8Weight") -> ArrayLike:
    """Exact int8 matrix product: ``a`` (M x K int8) @ ``b`` (K x N int8, or a :class:`PackedInt8Weight`) -> int32.

    Example::

        >>> a = torch.tensor([[1, -2, 3]], dtype=torch.int8)
        >>> b = torch.tensor([[127], [127], [-128]], dtype=torch.int8)
        >>> fastdistill.int8_mm(a, b)
        tensor([[-511]], dtype=torch.int32)
    """
    ta = to_tensor(a, "a")
    _check_int8_matrix(ta, "a")
    if isinstance(b, PackedInt8Weight):
        if b.shape[0] != ta.shape[1]:
            raise ValueError(f"b: expected {ta.shape[1]} rows (a has {ta.shape[1]} columns), got {b.shape[0]}")
        if b.codes.device != ta.device:
            raise ValueError(f"b: on {b.codes.device}, a on {ta.device}")
        return like_input(_ops.call("int8_mm_packed", ta.detach().contiguous(), b.codes, b.packed, b.comp), a)
    tb = to_tensor(b, "b")
    _check_int8_matrix(tb, "b")
    if tb.shape[0] != ta.shape[1]:
        raise ValueError(f"b: expected {ta.shape[1]} rows (a has {ta.shape[1]} columns), got shape {tuple(tb.shape)}")
    if tb.device != ta.device:
        raise ValueError(f"b: on {tb.device}, a on {ta.device}")
    return like_input(_ops.call("int8_mm", ta.detach().contiguous(), tb.detach().contiguous()), a)


def int8_linear(x: ArrayLike, qweight: PackedInt8Weight, bias: Optional[ArrayLike] = None) -> ArrayLike:
    """``y = x @ W.T + bias`` with W int8 per output channel and x quantized to int8 per row (per token) on the fly.

    ``x``: (..., K) float (fp32 or bf16 natively; fp16/fp64 are computed in fp32); ``qweight``: a
    :class:`PackedInt8Weight` with scales (see :func:`prepack_int8_weight`); ``bias``: N floats or None. Returns fp32
    (..., N). Each row of x uses ``scale = absmax / 127``; the output is
    ``float(q_x @ codes.T) * x_scale * w_scale + bias``.

    Example::

        >>> lin = torch.nn.Linear(32, 64)
        >>> w = prepack_int8_weight(fastdistill.quantize(lin.weight, 8, granularity="channel"))
        >>> y = fastdistill.int8_linear(torch.randn(8, 32), w, lin.bias)
    """
    t = to_tensor(x, "x")
    check_float(t)
    if not isinstance(qweight, PackedInt8Weight):
        raise TypeError(f"qweight: expected a PackedInt8Weight (see prepack_int8_weight), got {type(qweight).__name__}")
    if qweight.scale is None:
        raise ValueError("qweight: has no per-channel scales (pass scale= to prepack_int8_weight)")
    return like_input(linear_checked(t, qweight, checked_bias(t, qweight.shape, qweight.codes.device, bias)), x)


def checked_bias(x: Tensor, shape: Tuple[int, int], device: torch.device,
                 bias: Optional[ArrayLike]) -> Optional[Tensor]:
    """Checks ``x`` (its last dimension, its device) against a prepacked (K, N) weight on ``device``; returns the
    bias as a contiguous fp32 tensor on x's device (or None). Shared by the int8 and int4 linear functions."""
    k, n = shape
    if x.dim() == 0 or x.shape[-1] != k:
        raise ValueError(f"x: expected last dimension {k} (in features), got shape {tuple(x.shape)}")
    if device != x.device:
        raise ValueError(f"qweight: on {device}, x on {x.device}")
    if bias is None:
        return None
    tb = to_tensor(bias, "bias").detach()
    if tb.dtype != torch.float32 or tb.device != x.device or not tb.is_contiguous():
        tb = tb.to(device=x.device, dtype=torch.float32).contiguous()
    if tb.shape != (n,):
        raise ValueError(f"bias: expected shape ({n},), got {tuple(tb.shape)}")
    return tb


def linear_checked(x: Tensor, qweight: PackedInt8Weight, bias: Optional[Tensor]) -> Tensor:
    """:func:`int8_linear` on arguments already checked (x float with K last; bias fp32, contiguous, on x's device):
    the per-call path of :class:`fastdistill.nn.Int8Linear`."""
    flat = x.dim() == 2  # no reshapes in or out (each ~1 us, next to a 6-70 us kernel at M = 1)
    x2 = x.detach() if flat else x.detach().reshape(math.prod(x.shape[:-1]), x.shape[-1])
    if x2.dtype not in (torch.float32, torch.bfloat16):
        x2 = x2.float()
    out = _ops.call("int8_linear", x2.contiguous(), qweight.codes, qweight.scale, qweight.packed, qweight.comp, bias)
    return out if flat else out.reshape(*x.shape[:-1], out.shape[1])
