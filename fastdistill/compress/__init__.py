"""Model-level compression: pruning whole models (more to come: quantization, sparsification, compact files)."""
from .neurons import prune_neurons
from .prune import prune, remove_pruning, sparsity
from .sparsify import sparsify

__all__ = ["prune", "prune_neurons", "remove_pruning", "sparsify", "sparsity"]
