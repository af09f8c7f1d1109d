"""Model-level compression: pruning whole models (more to come: quantization, sparsification, compact files)."""
from .prune import prune, remove_pruning, sparsity
from .sparsify import sparsify

__all__ = ["prune", "remove_pruning", "sparsify", "sparsity"]
