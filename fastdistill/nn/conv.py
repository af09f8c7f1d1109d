"""``Int8Conv2d``: a 2-D convolution lowered to the int8 GEMM of :func:`fastdistill.int8_linear`.

The input is read channels-last: each output pixel's receptive field (kh x kw x C, channels innermost) is one row of
a patch matrix, quantized per row to int8 on the fly and multiplied by the (out_channels x kh*kw*C) int8 weight with
one scale per output channel. The result is already channels-last, returned as an NCHW-shaped tensor in
``torch.channels_last`` memory format, so a following Int8Conv2d (after ReLU / pooling, which keep the format)
reads it without a copy; a 1x1 convolution with stride 1 needs no patch matrix at all.
"""
from __future__ import annotations

from typing import Mapping, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._convert import check_float
from ..int8 import PackedInt8Weight, _linear_weight_codes, linear_checked, prepack_int8_weight
from ..quantization import quantize
from ._packed import PackedWeightModule

Pair = Union[int, Tuple[int, int]]


def _pair(v: Pair, name: str) -> Tuple[int, int]:
    out = (v, v) if isinstance(v, int) else tuple(v)
    if len(out) != 2 or any(isinstance(i, bool) or not isinstance(i, int) for i in out):
        raise ValueError(f"{name}: expected an int or a pair of ints, got {v!r}")
    return out


def _explicit_padding(conv: nn.Conv2d) -> Tuple[int, int]:
    """The zero padding of ``conv`` as two ints ("valid" / "same" stand for explicit paddings at stride 1)."""
    if not isinstance(conv.padding, str):
        return tuple(conv.padding)
    if conv.padding == "valid":
        return (0, 0)
    if any((d * (k - 1)) % 2 for d, k in zip(conv.dilation, conv.kernel_size)):
        raise ValueError("conv: padding='same' with an even kernel pads asymmetrically; not supported")
    return tuple(d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size))


class Int8Conv2d(PackedWeightModule):
    """Conv2d (``groups=1``, zero padding) with int8 weights per output channel and int8 activations per output
    pixel (quantized at run time); forward = patch matrix (channels-last) x int8 GEMM, fp32 accumulation.

    Buffers: ``weight_int8`` (out x kh*kw*in int8, the kernel window flattened channels innermost), ``weight_scale``
    (out fp32), ``bias`` (out fp32 or None).

    Example::

        >>> q = Int8Conv2d.from_float(torch.nn.Conv2d(16, 32, 3, padding=1))
        >>> q(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 32, 8, 8])
    """

    FP32_BUFFERS = ("weight_scale", "bias")

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Pair, stride: Pair = 1, padding: Pair = 0,
                 dilation: Pair = 1, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride, self.padding = _pair(stride, "stride"), _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        k = self.kernel_size[0] * self.kernel_size[1] * self.in_channels
        self.register_buffer("weight_int8", torch.zeros(out_channels, k, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.zeros(out_channels))
        self.register_buffer("bias", torch.zeros(out_channels) if bias else None)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, *, scale_method: str = "absmax") -> "Int8Conv2d":
        """Quantizes ``conv``'s weight per output channel (clip ranges by ``scale_method``, see
        :func:`fastdistill.quantize`); ``groups`` must be 1 and padding zeros."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv: expected an nn.Conv2d, got {type(conv).__name__}")
        if conv.groups != 1:
            raise ValueError(f"conv: groups={conv.groups}; Int8Conv2d lowers groups=1 convolutions only")
        if conv.padding_mode != "zeros":
            raise ValueError(f"conv: padding_mode={conv.padding_mode!r}; Int8Conv2d pads with zeros only")
        padding = _explicit_padding(conv)
        w = conv.weight.detach().float().permute(0, 2, 3, 1).reshape(conv.out_channels, -1)
        codes, scale = _linear_weight_codes(quantize(w, 8, granularity="channel", scale_method=scale_method))
        mod = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, padding, conv.dilation,
                  conv.bias is not None)
        mod.to(w.device)
        mod.weight_int8.copy_(codes)
        mod.weight_scale.copy_(scale)
        if conv.bias is not None:
            mod.bias.copy_(conv.bias.detach().float())
        mod._repack()
        return mod

    @classmethod
    def for_state(cls, module: nn.Module, state: Mapping[str, Tensor], prefix: str) -> "Int8Conv2d":
        """An empty Int8Conv2d shaped to take the ``state`` entries under ``prefix``, with the geometry (kernel,
        stride, padding, dilation) of ``module``, the layer it replaces (for ``fastdistill.load``)."""
        if not isinstance(module, (nn.Conv2d, Int8Conv2d)):
            raise TypeError(f"module: expected an nn.Conv2d to replace, got {type(module).__name__}")
        codes = state[prefix + "weight_int8"]
        kh, kw = module.kernel_size
        padding = _explicit_padding(module) if isinstance(module, nn.Conv2d) else module.padding
        return cls(codes.shape[1] // (kh * kw), codes.shape[0], module.kernel_size, module.stride, padding,
                   module.dilation, prefix + "bias" in state)

    def _pack(self) -> PackedInt8Weight:
        return prepack_int8_weight(self.weight_int8, self.weight_scale, transposed=True)

    @property
    def weight(self) -> Tensor:
        """The dequantized fp32 weight (out, in, kh, kw), computed on each access."""
        kh, kw = self.kernel_size
        w = self.weight_int8.float() * self.weight_scale[:, None]
        return w.reshape(self.out_channels, kh, kw, self.in_channels).permute(0, 3, 1, 2).contiguous()

    def patches(self, x: Tensor) -> Tuple[Tensor, int, int]:
        """(patch matrix (N*OH*OW, kh*kw*C), OH, OW) of an (N, C, H, W) input, channels innermost."""
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        if oh <= 0 or ow <= 0:
            raise ValueError(f"x: input {h}x{w} is smaller than the kernel's receptive field")
        nhwc = x.permute(0, 2, 3, 1)
        if ph or pw:
            nhwc = F.pad(nhwc, (0, 0, pw, pw, ph, ph))
        nhwc = nhwc.contiguous()
        if (kh, kw, sh, sw) == (1, 1, 1, 1):
            return nhwc.reshape(n * oh * ow, c), oh, ow
        s_n, s_h, s_w, s_c = nhwc.stride()
        windows = nhwc.as_strided((n, oh, ow, kh, kw, c), (s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c))
        return windows.reshape(n * oh * ow, kh * kw * c), oh, ow

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        check_float(x)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected (N, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        rows, oh, ow = self.patches(x)
        y = linear_checked(rows, self.packed, self.bias)
        y = y.reshape(x.shape[0], oh, ow, self.out_channels).permute(0, 3, 1, 2)
        return y if x.dtype == torch.float32 else y.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, "
                "weight=int8 per channel, activations=int8 per pixel (dynamic)")
