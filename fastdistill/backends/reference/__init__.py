"""Pure-torch reference kernels: the default on every device and the ground truth of the tests."""
from . import prune  # noqa: F401
from . import int8  # noqa: F401
