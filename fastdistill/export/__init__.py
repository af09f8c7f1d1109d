"""Out of PyTorch: compressed models as files other runtimes run (:func:`onnx`; needs the ``onnx`` package)."""
from ._onnx import onnx

__all__ = ["onnx"]
