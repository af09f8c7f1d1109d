"""``Int8Linear``: a drop-in ``nn.Linear`` replacement running :func:`fastdistill.int8_linear` (int8 weights per
output channel, activations quantized per token at run time, fp32 accumulation of the dequantized result).

Optional outlier channels (LLM.int8()-style decomposition): input channels whose calibrated magnitude dwarfs the
others would set every token's quantization scale and crush the remaining channels to a few codes. Such channels are
zeroed before quantization and their contribution added in fp32 (a (M x n_outliers) @ (n_outliers x N) product).
Measured on Gaussian activations with 4 of 512 channels scaled up 10-30x: output error 2.7-3.8% without, 0.3-0.6%
with the decomposition (SmoothQuant-style smoothing, alpha = 0.5, reached 1.0-1.2%).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn

from ..int8 import PackedInt8Weight, _linear_weight_codes, linear_checked, prepack_int8_weight
from ..quantization import quantize
from ._packed import PackedWeightModule, check_linear_input

GRANULARITIES = ("channel", "tensor")


class Int8Linear(PackedWeightModule):
    """y = x @ W.T + b with W held as int8 codes and fp32 scales; forward = :func:`fastdistill.int8_linear`.

    Buffers (what ``state_dict`` holds): ``weight_int8`` (out x in int8), ``weight_scale`` (out fp32), ``bias``
    (out fp32 or None), ``outlier_channels`` (int64 input-channel indices computed in fp32) and ``outlier_weight``
    (out x n_outliers fp32). The native kernel's prepacked layout is rebuilt from the codes on load and on ``.to()``.
    Outputs are fp32 for fp32 inputs and cast back to the input dtype otherwise; ``.half()`` / ``.to(dtype)`` keep
    the scales, bias and outlier weights in fp32.

    Example::

        >>> q = Int8Linear.from_float(torch.nn.Linear(64, 32))
        >>> q(torch.randn(8, 64)).shape
        torch.Size([8, 32])
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, outliers: int = 0):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.zeros(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("outlier_channels", torch.zeros(outliers, dtype=torch.int64))
        self.register_buffer("outlier_weight", torch.zeros(out_features, outliers))

    @classmethod
    def from_float(cls, linear: nn.Linear, *, granularity: str = "channel",
                   outlier_channels: Optional[Tensor] = None, scale_method: str = "absmax",
                   fisher: Optional[Tensor] = None) -> "Int8Linear":
        """Quantizes ``linear``'s weight: ``granularity="channel"`` (one scale per output channel) or ``"tensor"``
        (one scale, as quantize_dynamic's default), clip ranges by ``scale_method`` (see
        :func:`fastdistill.quantize`; ``"fisher"`` with ``fisher``, the weight's shape). ``outlier_channels``: input channels kept in fp32 (see the module
        docstring; :func:`fastdistill.compress.quantize` finds them from calibration batches)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity: expected one of {GRANULARITIES}, got {granularity!r}")
        w = linear.weight.detach().float()
        idx = torch.zeros(0, dtype=torch.int64, device=w.device) if outlier_channels is None else \
            torch.as_tensor(outlier_channels, dtype=torch.int64, device=w.device).flatten().unique()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= linear.in_features):
            raise ValueError(f"outlier_channels: expected indices in [0, {linear.in_features}), got {idx.tolist()}")
        mod = cls(linear.in_features, linear.out_features, linear.bias is not None, outliers=idx.numel())
        quantized = w.index_fill(1, idx, 0.0) if idx.numel() else w
        codes, scale = _linear_weight_codes(quantize(quantized, 8, granularity=granularity,
                                                     scale_method=scale_method, fisher=fisher))
        if w.device.type != "cpu":
            mod.to(w.device)
        mod.weight_int8.copy_(codes)
        mod.weight_scale.copy_(scale)
        if linear.bias is not None:
            mod.bias.copy_(linear.bias.detach().float())
        mod.outlier_channels.copy_(idx)
        mod.outlier_weight.copy_(w[:, idx])
        mod._repack()
        return mod

    FP32_BUFFERS = ("weight_scale", "bias", "outlier_weight")

    def _pack(self) -> PackedInt8Weight:
        return prepack_int8_weight(self.weight_int8, self.weight_scale, transposed=True)

    @property
    def weight(self) -> Tensor:
        """The dequantized fp32 weight (computed on each access; for inspection and code that reads ``.weight``)."""
        w = self.weight_int8.float() * self.weight_scale[:, None]
        if self.outlier_channels.numel():
            w[:, self.outlier_channels] = self.outlier_weight
        return w

    def forward(self, x: Tensor) -> Tensor:
        check_linear_input(x, self.in_features)
        if self.outlier_channels.numel():
            xo = x.index_select(-1, self.outlier_channels).float()
            y = linear_checked(x.index_fill(-1, self.outlier_channels, 0), self.packed, self.bias)
            y = y.add_(xo @ self.outlier_weight.t())
        else:
            y = linear_checked(x, self.packed, self.bias)
        return y if x.dtype == torch.float32 else y.to(x.dtype)

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str, local_metadata, strict: bool,
                              missing_keys: List[str], unexpected_keys: List[str], error_msgs: List[str]) -> None:
        # The number of outlier channels is data: take it from the checkpoint.
        for name in ("outlier_channels", "outlier_weight"):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"bits=8, weight=int8 {tuple(self.weight_int8.shape)} with {self.weight_scale.numel()} fp32 scales, "
                f"activations=int8 per-token (dynamic), outlier_channels={self.outlier_channels.numel()}")
