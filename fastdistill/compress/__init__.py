"""Model-level compression: pruning whole models (more to come: quantization, sparsification, compact files)."""
from .prune import prune, remove_pruning, sparsity
from .quantize import quantize

__all__ = ["prune", "quantize", "remove_pruning", "sparsity"]
