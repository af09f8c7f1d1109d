"""Base of the quantized layers whose forward runs a kernel on a weight packed from their buffers."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor, nn

from .._convert import check_float


def check_linear_input(x: object, in_features: int) -> None:
    """TypeError / ValueError unless ``x`` is a float tensor whose last dimension is ``in_features``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    check_float(x)
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(f"x: expected last dimension {in_features} (in features), got shape {tuple(x.shape)}")


class PackedWeightModule(nn.Module):
    """Keeps a layer's packed weight (``self.packed``, built by ``_pack()`` from the buffers) in step with its
    buffers: rebuilt on ``load_state_dict`` and on ``.to()`` / ``.half()``, which also leave the buffers named in
    ``FP32_BUFFERS`` (scales, bias: the kernels' epilogue computes in fp32) in fp32."""

    FP32_BUFFERS: Tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self._packed: Any = None

    def _pack(self) -> Any:
        raise NotImplementedError

    def _repack(self) -> None:
        # Eagerly, outside forward: torch.compile then traces forward without the packing (or its backend probe).
        self._packed = self._pack()

    @property
    def packed(self) -> Any:
        """The weight packed for the kernels (rebuilt on conversion, load and device moves)."""
        if self._packed is None:
            self._repack()
        return self._packed

    def _apply(self, fn, recurse=True):
        fp32 = {name: getattr(self, name) for name in self.FP32_BUFFERS}
        out = super()._apply(fn, recurse)
        for name, old in fp32.items():
            new = getattr(self, name)
            if new is not None and new.dtype != torch.float32:
                setattr(self, name, old.to(new.device))
        self._repack()
        return out

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str, local_metadata, strict: bool,
                              missing_keys: List[str], unexpected_keys: List[str], error_msgs: List[str]) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._repack()
