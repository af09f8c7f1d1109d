"""Model-level compression: pruning (unstructured and whole neurons), int8 and sparse layers, compact safe files."""
from .io import load, model_size, save
from .neurons import prune_neurons
from .prune import prune, remove_pruning, restore_masks, sparsity
from .quantize import quantize
from .schedule import GradualPruner
from .sparsify import sparsify

__all__ = ["GradualPruner", "load", "model_size", "prune", "prune_neurons", "quantize", "remove_pruning",
           "restore_masks", "save", "sparsify", "sparsity"]
