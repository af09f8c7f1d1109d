"""Model-level compression: pruning (unstructured, whole neurons and heads, whole layers), int8 and sparse layers,
compact safe files."""
from .io import load, model_size, save
from .layers import drop_layers
from .neurons import channel_groups, prune_heads, prune_neurons
from .prune import prune, remove_pruning, restore_masks, sparsity
from .quantize import quantize
from .schedule import GradualPruner
from .sparsify import sparsify

__all__ = ["GradualPruner", "channel_groups", "drop_layers", "load", "model_size", "prune", "prune_heads",
           "prune_neurons", "quantize", "remove_pruning", "restore_masks", "save", "sparsify", "sparsity"]
