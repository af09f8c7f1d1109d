"""fastdistill's modules."""
from .int8 import Int8Linear

__all__ = ["Int8Linear"]
