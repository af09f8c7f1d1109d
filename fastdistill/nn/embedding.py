"""``QuantizedEmbedding``: an ``nn.Embedding`` whose table is held as int8 or int4 codes with one fp32 scale per group
of each token's vector; a lookup dequantizes only the rows it gathers."""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor, nn

from ..formats.codes import row_bytes
from ..formats.groups import dequantize_grouped
from ..quantization import quantize
from .int4 import group_size_for

BITS = (8, 4)


class QuantizedEmbedding(nn.Module):
    """A lookup table of ``num_embeddings`` vectors of ``embedding_dim`` stored as symmetric ``bits``-bit codes
    (``weight_codes``: int8, or uint8 with two int4 codes per byte) and fp32 ``weight_scale`` (one per group of
    ``group_size`` elements of a vector). Output: fp32 vectors.

    Example::

        >>> q = QuantizedEmbedding.from_float(torch.nn.Embedding(1000, 256), bits=4, group_size=128)
        >>> q(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 256])
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, bits: int = 8, group_size: int = 128,
                 padding_idx: Optional[int] = None):
        super().__init__()
        if bits not in BITS or isinstance(bits, bool):
            raise ValueError(f"bits: expected one of {BITS}, got {bits!r}")
        self.num_embeddings, self.embedding_dim, self.bits = int(num_embeddings), int(embedding_dim), bits
        self.group_size = group_size_for(self.embedding_dim, group_size)
        self.padding_idx = padding_idx
        dtype = torch.int8 if bits == 8 else torch.uint8
        self.register_buffer("weight_codes", torch.zeros(num_embeddings, row_bytes(embedding_dim, bits), dtype=dtype))
        self.register_buffer("weight_scale", torch.zeros(num_embeddings, embedding_dim // self.group_size))

    @classmethod
    def from_float(cls, embedding: nn.Embedding, *, bits: int = 8, group_size: int = 128,
                   scale_method: str = "absmax") -> "QuantizedEmbedding":
        """Quantizes ``embedding``'s table (``max_norm`` renormalisation and sparse gradients are not supported)."""
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"embedding: expected an nn.Embedding, got {type(embedding).__name__}")
        if embedding.max_norm is not None:
            raise ValueError("embedding: max_norm renormalises the table on lookup; a quantized table cannot")
        n, d = embedding.weight.shape
        mod = cls(n, d, bits=bits, group_size=group_size, padding_idx=embedding.padding_idx)
        q = quantize(embedding.weight.detach().float(), bits, granularity="group", group_size=mod.group_size,
                     scale_method=scale_method)
        mod.to(embedding.weight.device)
        mod.weight_codes.copy_(q.codes.reshape(n, -1))
        mod.weight_scale.copy_(q.scale.reshape(n, -1))
        return mod

    @classmethod
    def for_state(cls, module: nn.Module, state: Mapping[str, Tensor], prefix: str) -> "QuantizedEmbedding":
        """An empty QuantizedEmbedding shaped to take the ``state`` entries under ``prefix`` (for
        ``fastdistill.load``; ``module`` is the layer it replaces)."""
        codes, scale = state[prefix + "weight_codes"], state[prefix + "weight_scale"]
        bits = 8 if codes.dtype == torch.int8 else 4
        dim = codes.shape[1] * (8 // bits)
        return cls(codes.shape[0], dim, bits=bits, group_size=dim // max(scale.shape[1], 1),
                   padding_idx=getattr(module, "padding_idx", None))

    @property
    def weight(self) -> Tensor:
        """The dequantized fp32 table (computed on each access)."""
        return dequantize_grouped(self.weight_codes, self.weight_scale, self.embedding_dim, self.bits,
                                  self.group_size)

    def forward(self, indices: Tensor) -> Tensor:
        flat = indices.reshape(-1)
        rows = dequantize_grouped(self.weight_codes.index_select(0, flat), self.weight_scale.index_select(0, flat),
                                  self.embedding_dim, self.bits, self.group_size)
        return rows.reshape(*indices.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}, group_size={self.group_size}"
                + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""))
