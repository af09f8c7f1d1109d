"""fastdistill: fast, natively accelerated building blocks for model distillation and compression.

Ops accept torch tensors (CPU or CUDA) and numpy arrays and return the same kind. Each op runs on the fastest
backend that can serve its inputs (C++ > Numba > pure torch on CPU; CUDA > pure torch on GPU); force one with
:func:`set_backend`, :func:`use_backend` or ``FASTDISTILL_BACKEND``. ``fastdistill.info()`` says what is built.
"""
__version__ = "0.1.0"

from ._dispatch import BackendError, get_backend, set_backend, use_backend
from ._info import info
from . import compress, export, nn
from .fused_linear_kd import fused_linear_kd_loss
from .kd import kd_loss, sparse_kd_loss
from .int4 import PackedInt4Weight, int4_linear, prepack_int4_weight
from .int8 import PackedInt8Weight, int8_linear, int8_mm, prepack_int8_weight
from .pruning import (
    channel_mask,
    global_magnitude_masks,
    magnitude_mask,
    magnitude_threshold,
    nm_mask,
    prune_,
    random_mask,
    wanda_mask,
)
from .quantization import QuantizedTensor, dequantize, fake_quantize, quantize
from .sparse import SparseWeight, sparse_linear, spmm
from .compress.io import load, model_size, save


def __getattr__(name: str):
    # fastdistill.distill and fastdistill.distributed import on first use: nothing heavy at `import fastdistill`
    if name in ("distill", "distributed"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fastdistill' has no attribute {name!r}")

__all__ = [
    "BackendError",
    "channel_mask",
    "compress",
    "dequantize",
    "distill",
    "distributed",
    "export",
    "fake_quantize",
    "fused_linear_kd_loss",
    "get_backend",
    "global_magnitude_masks",
    "info",
    "int4_linear",
    "int8_linear",
    "int8_mm",
    "kd_loss",
    "load",
    "magnitude_mask",
    "magnitude_threshold",
    "model_size",
    "nm_mask",
    "nn",
    "PackedInt4Weight",
    "PackedInt8Weight",
    "prepack_int4_weight",
    "prepack_int8_weight",
    "prune_",
    "quantize",
    "QuantizedTensor",
    "random_mask",
    "save",
    "set_backend",
    "sparse_kd_loss",
    "sparse_linear",
    "SparseWeight",
    "spmm",
    "use_backend",
    "wanda_mask",
]
