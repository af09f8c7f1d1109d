"""Argument checks and numpy <-> torch conversion shared by the public ops."""
from __future__ import annotations

import numbers
import warnings
from typing import Any, Union

import numpy as np
import torch

ArrayLike = Union[torch.Tensor, np.ndarray]

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def to_tensor(x: Any, name: str = "x", *, writeable: bool = False) -> torch.Tensor:
    """``x`` as a torch tensor sharing its memory (numpy arrays are wrapped, not copied)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if writeable and not x.flags.writeable:
            raise ValueError(f"{name}: the numpy array is read-only and this op modifies it in place")
        with warnings.catch_warnings():  # read-only arrays are only read by the non-mutating ops
            warnings.simplefilter("ignore", UserWarning)
            try:
                return torch.from_numpy(x)
            except TypeError as exc:
                raise TypeError(f"{name}: numpy dtype {x.dtype} is not supported ({exc})") from None
    raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def check_float(x: torch.Tensor, name: str = "x") -> None:
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a float32, float16, bfloat16 or float64 tensor, got {x.dtype}")


def check_int(value: Any, name: str) -> int:
    """``value`` as a Python int: ints and numpy integers are accepted, bools and floats (even ``8.0``) are not."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    return int(value)


def like_input(result: torch.Tensor, original: Any) -> ArrayLike:
    """Return ``result`` as the same kind (torch or numpy) as the caller's input."""
    return result.numpy() if isinstance(original, np.ndarray) else result


def prune_count(amount: Any, n: int, name: str = "sparsity") -> int:
    """How many of ``n`` elements to prune, as in ``torch.nn.utils.prune``: a float in [0, 1] is a fraction
    (``round(amount * n)``, round-half-to-even), an int is an absolute count in [0, n]."""
    if isinstance(amount, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a float in [0, 1] or an int count, got a bool")
    if isinstance(amount, numbers.Integral):
        if not 0 <= int(amount) <= n:
            raise ValueError(f"{name}: an int count must be in [0, {n}] (number of elements), got {int(amount)}")
        return int(amount)
    if isinstance(amount, numbers.Real):
        amount = float(amount)
        if not 0.0 <= amount <= 1.0:  # also rejects NaN
            raise ValueError(f"{name}: a float fraction must be in [0, 1], got {amount}")
        return round(amount * n)
    raise TypeError(f"{name}: expected a float in [0, 1] or an int count, got {type(amount).__name__}")


def normalize_dim(dim: Any, ndim: int, name: str = "dim") -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(dim).__name__}")
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise ValueError(f"{name}: expected a dimension in [{-max(ndim, 1)}, {max(ndim, 1) - 1}], got {dim}")
    return int(dim) % max(ndim, 1)
