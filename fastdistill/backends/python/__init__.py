"""Pure-torch reference kernels: the default on every device and the ground truth of the tests."""
from . import prune  # noqa: F401
from . import quant  # noqa: F401
from . import kd  # noqa: F401
from . import sparse  # noqa: F401
from . import int8  # noqa: F401
from . import data  # noqa: F401
from . import int4  # noqa: F401
from . import wanda  # noqa: F401
