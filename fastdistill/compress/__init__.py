"""Model-level compression: pruning (unstructured and whole neurons), sparse layers, compact safe model files."""
from .io import load, model_size, save
from .neurons import prune_neurons
from .prune import prune, remove_pruning, sparsity
from .sparsify import sparsify

__all__ = ["load", "model_size", "prune", "prune_neurons", "save", "remove_pruning", "sparsify", "sparsity"]
