"""SparseLinear: an inference ``nn.Linear`` whose weight is stored and multiplied as CSR (fastdistill.SparseWeight)."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from .. import pruning
from ..sparse import SparseWeight, sparse_linear


class SparseLinear(nn.Module):
    """``y = x @ W^T + b`` with W held as CSR buffers (``indptr``, ``indices``, ``values``, and ``scale`` for int8
    values, else None; see :class:`fastdistill.SparseWeight`), so a pruned layer is smaller and, at high sparsity,
    faster than dense.

    The weight and bias are frozen (no gradients); gradients do flow to the input, so layers before a SparseLinear
    can still be trained. The buffers follow the module through ``.to(device)`` and ``state_dict()``.

    Example::

        >>> layer = fastdistill.nn.SparseLinear.from_dense(nn.Linear(512, 256), sparsity=0.9)
        >>> layer(torch.randn(8, 512)).shape
        torch.Size([8, 256])
    """

    def __init__(self, weight: SparseWeight, bias: Optional[torch.Tensor] = None):
        super().__init__()
        if not isinstance(weight, SparseWeight):
            raise TypeError(f"weight: expected a fastdistill.SparseWeight, got {type(weight).__name__}")
        self.out_features, self.in_features = weight.shape
        self.register_buffer("indptr", weight.indptr)
        self.register_buffer("indices", weight.indices)
        self.register_buffer("values", weight.values)
        self.register_buffer("scale", weight.scale)  # None (and absent from state_dict) for float values
        if bias is not None:
            if bias.shape != (self.out_features,):
                raise ValueError(f"bias: expected shape ({self.out_features},), got {tuple(bias.shape)}")
            self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_dense(cls, linear: nn.Linear, *, sparsity: Optional[Union[float, int]] = None,
                   dtype: Optional[torch.dtype] = None) -> "SparseLinear":
        """A SparseLinear computing what ``linear`` computes. With ``sparsity``, the weight (a copy; ``linear`` is
        untouched) is first magnitude-pruned to that fraction (or count) of zeros; without it the existing zeros
        are dropped. ``dtype``: the stored values' dtype (see :meth:`fastdistill.SparseWeight.from_dense`);
        ``torch.int8`` quantizes them per row (approximate), float dtypes are exact.

        Example::

            >>> fastdistill.nn.SparseLinear.from_dense(nn.Linear(64, 32), sparsity=0.75).weight.nnz
            512
            >>> fastdistill.nn.SparseLinear.from_dense(nn.Linear(64, 32), sparsity=0.75, dtype=torch.int8).scale.shape
            torch.Size([32])
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach()
        if sparsity is not None:
            w = w.clone()
            pruning.prune_(w, sparsity)
        if dtype is None and w.dtype == torch.float64:
            dtype = torch.float32  # fp64 layers are rounded to fp32 on purpose
        return cls(SparseWeight.from_dense(w, dtype), linear.bias)

    @property
    def weight(self) -> SparseWeight:
        """The CSR weight (a view of the buffers)."""
        return SparseWeight._trusted(self.indptr, self.indices, self.values, (self.out_features, self.in_features),
                                     self.scale)

    def to_linear(self) -> nn.Linear:
        """The equivalent dense ``nn.Linear``."""
        dense = self.weight.to_dense()
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device=dense.device,
                        dtype=dense.dtype)
        with torch.no_grad():
            out.weight.copy_(dense)
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sparse_linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        w = self.weight
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"sparsity={w.sparsity:.3f}, values={w.dtype}")
