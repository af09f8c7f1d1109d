"""Magnitude, N:M, structured and random pruning masks.

Conventions shared by every function here:

* A mask is a bool tensor (or numpy array, matching the input) of the input's shape: ``True`` = kept.
* ``sparsity`` follows ``torch.nn.utils.prune``: a float in [0, 1] prunes ``round(sparsity * n)`` elements
  (round-half-to-even), an int prunes exactly that many. Exactly that many are pruned, even with ties.
* Ties: among equal magnitudes at the boundary, elements with a lower flat index (and, over several tensors, in an
  earlier tensor) are pruned first. ``+-inf`` count as the largest magnitudes; NaN raises ValueError.
* fp32, fp16, bf16 (and fp64, on the reference backend) inputs of any shape and layout; empty inputs are fine.
"""
from __future__ import annotations

import numbers
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from . import _ops
from ._convert import ArrayLike, check_float, check_int, like_input, normalize_dim, prune_count, to_tensor

Sparsity = Union[float, int]


def magnitude_threshold(x: ArrayLike, sparsity: Sparsity) -> ArrayLike:
    """The largest pruned magnitude: the ``k``-th smallest ``|x|`` for ``k`` elements to prune (-inf if ``k == 0``).

    Elements with ``|x|`` above it are kept, below it pruned; ties at it are pruned in index order.

    Example::

        >>> w = torch.tensor([0.5, -2.0, 0.1, 3.0])
        >>> fastdistill.magnitude_threshold(w, 0.5)
        tensor(0.5000)
    """
    t = to_tensor(x)
    check_float(t)
    k = prune_count(sparsity, t.numel())
    thr = _ops.call("magnitude_threshold", [t.detach()], k).to(t.dtype)
    if isinstance(x, np.ndarray):
        return x.dtype.type(thr.item())
    return thr


def magnitude_mask(x: ArrayLike, sparsity: Sparsity) -> ArrayLike:
    """Keep-mask that prunes the ``sparsity`` smallest-magnitude elements of ``x`` (O(n) selection, no sort).

    Example::

        >>> w = torch.tensor([0.5, -2.0, 0.1, 3.0])
        >>> fastdistill.magnitude_mask(w, 0.5)
        tensor([False,  True, False,  True])
    """
    t = to_tensor(x)
    check_float(t)
    return like_input(_ops.call("magnitude_masks", [t.detach()], prune_count(sparsity, t.numel()))[0], x)


def prune_(x: ArrayLike, sparsity: Sparsity) -> ArrayLike:
    """Zeroes the ``sparsity`` smallest-magnitude elements of ``x`` in place (mask and zeroing fused in one pass);
    returns the keep-mask.

    Example::

        >>> w = torch.randn(256, 256)
        >>> mask = fastdistill.prune_(w, 0.9)
        >>> int((w == 0).sum()) >= round(0.9 * w.numel())
        True
    """
    t = to_tensor(x, writeable=True)
    check_float(t)
    k = prune_count(sparsity, t.numel())
    with torch.no_grad():
        mask = _ops.call("magnitude_prune_", t.detach(), k)
    return like_input(mask, x)


def global_magnitude_masks(tensors: Sequence[ArrayLike], sparsity: Sparsity) -> List[ArrayLike]:
    """Keep-masks from ONE magnitude threshold over all ``tensors`` together, as ``torch.nn.utils.prune.
    global_unstructured`` with L1 importance, computed without concatenating them. ``sparsity`` counts over the
    total number of elements. Tensors may differ in shape and float dtype.

    Example::

        >>> a, b = torch.randn(64, 32), torch.randn(10, 64)
        >>> ma, mb = fastdistill.global_magnitude_masks([a, b], 0.8)
        >>> int((~ma).sum() + (~mb).sum()) == round(0.8 * (a.numel() + b.numel()))
        True
    """
    if isinstance(tensors, (torch.Tensor, np.ndarray)) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"tensors: expected a list or tuple of tensors/arrays, got {type(tensors).__name__}")
    ts = [to_tensor(x, f"tensors[{i}]") for i, x in enumerate(tensors)]
    for i, t in enumerate(ts):
        check_float(t, f"tensors[{i}]")
    if len({t.device for t in ts}) > 1:
        raise ValueError("tensors: all tensors must be on the same device")
    if not ts:
        return []
    k = prune_count(sparsity, sum(t.numel() for t in ts))
    masks = _ops.call("magnitude_masks", [t.detach() for t in ts], k)
    return [like_input(m, x) for m, x in zip(masks, tensors)]


def nm_mask(x: ArrayLike, n: int = 2, m: int = 4, dim: int = -1) -> ArrayLike:
    """N:M semi-structured keep-mask: in every group of ``m`` consecutive elements along ``dim``, keep the ``n``
    largest magnitudes (ties keep the lower index). ``x.shape[dim]`` must be a multiple of ``m``.

    Example::

        >>> w = torch.tensor([[0.1, -0.9, 0.5, 0.2]])
        >>> fastdistill.nm_mask(w, 2, 4)
        tensor([[False,  True,  True, False]])
    """
    t = to_tensor(x)
    check_float(t)
    n, m = check_int(n, "n"), check_int(m, "m")
    if m < 1:
        raise ValueError(f"m: expected m >= 1, got {m}")
    if not 0 <= n <= m:
        raise ValueError(f"n: expected 0 <= n <= m = {m}, got {n}")
    d = normalize_dim(dim, t.dim())
    if t.dim() == 0:
        t = t.reshape(1)
    if t.shape[d] % m:
        raise ValueError(f"x: size {t.shape[d]} along dim {dim} is not a multiple of m = {m}")
    moved = t.detach().movedim(d, -1)
    mask = _ops.call("nm_mask", moved, n, m).movedim(-1, d).reshape(to_tensor(x).shape)
    return like_input(mask, x)


def channel_mask(x: ArrayLike, amount: Sparsity, dim: int = 0, p: float = 1) -> ArrayLike:
    """Structured keep-mask: prunes the ``amount`` slices along ``dim`` (rows of a Linear weight for ``dim=0``,
    output channels of a Conv weight) with the smallest L_p norm, as ``torch.nn.utils.prune.ln_structured``.
    The mask has x's shape, constant over each slice. Ties prune the lower index first.

    Example::

        >>> w = torch.tensor([[1.0, 1.0], [0.1, 0.1], [2.0, 0.0]])
        >>> fastdistill.channel_mask(w, 1, dim=0)[:, 0]
        tensor([ True, False,  True])
    """
    t = to_tensor(x)
    check_float(t)
    d = normalize_dim(dim, t.dim())
    if t.dim() == 0:
        raise ValueError("x: expected at least one dimension for structured pruning")
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real) or not p > 0:
        raise ValueError(f"p: expected a norm order > 0 (or float('inf')), got {p!r}")
    k = prune_count(amount, t.shape[d], "amount")
    others = [i for i in range(t.dim()) if i != d]
    work = t.detach().to(torch.float64 if t.dtype == torch.float64 else torch.float32)
    norms = torch.linalg.vector_norm(work, ord=p, dim=others) if others else work.abs()
    keep = _ops.call("magnitude_masks", [norms], k)[0]
    shape = [1] * t.dim()
    shape[d] = t.shape[d]
    return like_input(keep.reshape(shape).expand(t.shape).clone(), x)


def random_mask(x: ArrayLike, sparsity: Sparsity, generator: Optional[torch.Generator] = None) -> ArrayLike:
    """Keep-mask pruning exactly ``sparsity`` elements chosen uniformly at random (a baseline for magnitude pruning).

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> int((~fastdistill.random_mask(torch.empty(100), 0.3, g)).sum())
        30
    """
    t = to_tensor(x)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    k = prune_count(sparsity, t.numel())
    gen_device = generator.device if generator is not None else torch.device("cpu")
    pruned = torch.randperm(t.numel(), generator=generator, device=gen_device)[:k]
    keep = torch.ones(t.numel(), dtype=torch.bool, device=gen_device)
    keep[pruned] = False
    return like_input(keep.reshape(t.shape).to(t.device), x)


def wanda_mask(weight: ArrayLike, input_norms: ArrayLike, sparsity: Sparsity) -> ArrayLike:
    """Wanda keep-mask (Sun et al., "A Simple and Effective Pruning Approach for Large Language Models", 2023): the
    score of ``weight[i, j]`` is ``|weight[i, j]| * input_norms[j]`` (the L2 norm of input feature ``j`` over
    calibration data), and each output row ``i`` prunes its ``sparsity`` lowest scores (ties: lower column first).

    ``weight``: (out, in) float (a conv weight flattened to (out, in * kernel positions), with one norm per column);
    ``input_norms``: ``in`` non-negative floats.

    Example::

        >>> w = torch.tensor([[1.0, -2.0, 0.5, 0.1]])
        >>> fastdistill.wanda_mask(w, torch.tensor([1.0, 0.1, 4.0, 1.0]), 0.5)
        tensor([[ True, False,  True, False]])
    """
    t = to_tensor(weight, "weight")
    check_float(t, "weight")
    n = to_tensor(input_norms, "input_norms")
    check_float(n, "input_norms")
    if t.dim() != 2:
        raise ValueError(f"weight: expected a 2-D (out, in) matrix, got shape {tuple(t.shape)}")
    if n.shape != (t.shape[1],):
        raise ValueError(f"input_norms: expected shape ({t.shape[1]},) (one per input column), got {tuple(n.shape)}")
    if n.device != t.device:
        raise ValueError(f"input_norms: on {n.device}, weight on {t.device}")
    if bool((n < 0).any()) or not bool(torch.isfinite(n).all()):
        raise ValueError("input_norms: expected finite, non-negative norms")
    k = prune_count(sparsity, t.shape[1])
    mask = _ops.call("wanda_mask", t.detach(), n.detach().float(), k)
    return like_input(mask, weight)
