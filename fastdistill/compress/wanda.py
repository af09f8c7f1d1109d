"""Wanda masks for whole models: the L2 norm of every input feature of each selected layer over calibration batches
(one forward pass with hooks), then :func:`fastdistill.wanda_mask` per layer."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple, Union

from torch import Tensor, nn

from .. import pruning
from .structure import batches_of, run_hooked


def input_norms(model: nn.Module, layers: List[Tuple[str, nn.Module]], calibration: Any) -> Dict[str, Tensor]:
    """{layer name: L2 norm of each column of its weight's (out, in * kernel) matrix's input} over the batches: a
    Linear's input features; a convolution's input channels, repeated over its kernel positions."""
    sums: Dict[str, Tensor] = {}

    def hook(name):
        def record(module, args):
            x = args[0].detach().float()
            if isinstance(module, nn.modules.conv._ConvNd):
                sq = x.movedim(1, 0).reshape(x.shape[1], -1).square().sum(1)
            else:
                sq = x.reshape(-1, x.shape[-1]).square().sum(0)
            sums[name] = sums[name] + sq if name in sums else sq
        return record

    for name, module in layers:
        if isinstance(module, nn.modules.conv._ConvNd) and (module.groups != 1 or module.transposed):
            raise ValueError(f"layer {name!r}: method='wanda' handles ungrouped, non-transposed convolutions; "
                             "exclude it")
    run_hooked(model, batches_of(calibration), [m.register_forward_pre_hook(hook(n)) for n, m in layers])
    out = {}
    for name, module in layers:
        if name not in sums:
            raise ValueError(f"calibration: layer {name!r} was not reached by any calibration batch")
        norms = sums[name].sqrt()
        if isinstance(module, nn.modules.conv._ConvNd):
            norms = norms.repeat_interleave(math.prod(module.kernel_size))
        out[name] = norms.to(module.weight.device)
    return out


def wanda_masks(model: nn.Module, layers: List[Tuple[str, nn.Module]], sparsity: Union[float, int],
                calibration: Sequence) -> List[Tensor]:
    """One Wanda keep-mask per layer (the weight's shape), ``sparsity`` of each output row pruned."""
    norms = input_norms(model, layers, calibration)
    masks = []
    for name, module in layers:
        w = module.weight.detach()
        mask = pruning.wanda_mask(w.reshape(w.shape[0], -1), norms[name], sparsity)
        masks.append(mask.reshape(w.shape))
    return masks
