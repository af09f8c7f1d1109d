"""Every fastdistill op, declared once as a ``torch.library`` custom op: schema, fake (meta) implementation, and an
implementation that routes to the chosen backend (:mod:`fastdistill._dispatch`).

Declaring ops this way lets ``torch.compile(fullgraph=True)`` trace through them and ``torch.library.opcheck`` test
them. The implementations here only normalise layout (backends receive contiguous tensors) and restore it.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from ._dispatch import declare_op, dispatch
from ._kd_checks import check_classes, check_sparse_teacher
from .formats.codes import check_code_rows, code_dtype, row_bytes
from .formats.csr import columns, dequantized


_BODIES: Dict[str, Callable[..., Any]] = {}  # op -> its Python body (layout normalisation + dispatch)
_EAGER_AUTOGRAD: Dict[str, Any] = {}  # op -> an autograd.Function running the body with the op's own backward


def _op(name: str, mutates_args: Tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Any]:
    """Declares ``fastdistill::name`` as a torch.library custom op whose implementation is the decorated body."""

    def deco(body: Callable[..., Any]) -> Any:
        declare_op(name)
        _BODIES[name] = body
        return torch.library.custom_op(f"fastdistill::{name}", mutates_args=mutates_args)(body)

    return deco


def _register_autograd(name: str, backward: Callable[..., Any], setup_context: Callable[..., Any]) -> None:
    """Registers ``backward`` for the custom op ``name`` and for its eager path (see :func:`call`)."""
    getattr(sys.modules[__name__], name).register_autograd(backward, setup_context=setup_context)
    _EAGER_AUTOGRAD[name] = type(f"_{name}_eager", (torch.autograd.Function,), {
        "forward": staticmethod(_BODIES[name]), "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward)})


def _plain(arg: object) -> bool:
    """Whether ``arg`` holds no tensor subclass (a Parameter counts as plain)."""
    if isinstance(arg, Tensor):
        return type(arg) is Tensor or type(arg) is torch.nn.Parameter
    return not isinstance(arg, (list, tuple)) or all(_plain(a) for a in arg)


def call(op: str, *args: object, autograd: bool = False) -> Any:
    """The one way into an op, for every public function. Eager calls run the op's body directly: the custom op's
    dispatcher round trip costs 30-40 us (as much as an M = 1 linear kernel) and its first call imports the compiler
    stack (~1 s). With ``autograd`` the body runs inside an ``autograd.Function`` with the op's own backward. Under
    torch.compile and torch.jit.trace, and for tensor subclasses, the custom op itself is called so that graphs and
    subclass dispatch see it (a trace of the body would record the empty output buffer, not the kernel filling it)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or not all(_plain(a) for a in args):
        return getattr(sys.modules[__name__], op)(*args)  # (globals() cannot be traced by dynamo)
    if autograd:
        return _EAGER_AUTOGRAD[op].apply(*args)
    return _BODIES[op](*args)


# --------------------------------------------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------------------------------------------


@_op("magnitude_threshold")
def magnitude_threshold(xs: List[Tensor], k: int) -> Tensor:
    """0-d float32 (float64 if any input is float64): the k-th smallest |x| over all ``xs``; -inf when k == 0."""
    return dispatch("magnitude_threshold", [x.contiguous() for x in xs], k)


@magnitude_threshold.register_fake
def _(xs: List[Tensor], k: int) -> Tensor:
    dtype = torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32
    return xs[0].new_empty((), dtype=dtype)


@_op("magnitude_masks")
def magnitude_masks(xs: List[Tensor], k: int) -> List[Tensor]:
    """Keep-masks (bool, True = kept) that prune the k smallest |x| over all ``xs`` together."""
    masks = dispatch("magnitude_masks", [x.contiguous() for x in xs], k)
    return [_like(m, x) for m, x in zip(masks, xs)]


@magnitude_masks.register_fake
def _(xs: List[Tensor], k: int) -> List[Tensor]:
    return [torch.empty_like(x, dtype=torch.bool) for x in xs]


@_op("magnitude_prune_", mutates_args=("x",))
def magnitude_prune_(x: Tensor, k: int) -> Tensor:
    """Zeroes the k smallest |x| in place; returns the keep-mask."""
    work = x if x.is_contiguous() else x.contiguous()
    mask = dispatch("magnitude_prune_", work, k)
    if work is not x:
        x.copy_(work)
    return _like(mask, x)


@magnitude_prune_.register_fake
def _(x: Tensor, k: int) -> Tensor:
    return torch.empty_like(x, dtype=torch.bool)


@_op("nm_mask")
def nm_mask(x: Tensor, n: int, m: int) -> Tensor:
    """N:M keep-mask over consecutive groups of ``m`` elements along the last dimension of ``x``."""
    return _like(dispatch("nm_mask", x.contiguous(), n, m), x)


@nm_mask.register_fake
def _(x: Tensor, n: int, m: int) -> Tensor:
    return torch.empty_like(x, dtype=torch.bool)


def _like(result: Tensor, x: Tensor) -> Tensor:
    """``result`` (contiguous, x's shape) in x's memory layout, as the fake implementations promise."""
    if x.is_contiguous():
        return result
    out = torch.empty_like(x, dtype=result.dtype)
    out.copy_(result)
    return out


# --------------------------------------------------------------------------------------------------------------
# Quantization (rows of a (rows, length) float tensor, one scale and zero point per row; see quantization.py)
# --------------------------------------------------------------------------------------------------------------


@_op("quantize")
def quantize(x: Tensor, bits: int, scheme: str, method: str, percentile: float) -> Tuple[Tensor, Tensor, Tensor]:
    """(codes, scale, zero_point) of the 2-D float ``x``: codes (rows, row_bytes) int8/uint8 (packed below 8 bits),
    scale (rows,) float32, zero_point (rows,) int32."""
    return dispatch("quantize", x.contiguous(), bits, scheme, method, percentile)


@quantize.register_fake
def _(x: Tensor, bits: int, scheme: str, method: str, percentile: float) -> Tuple[Tensor, Tensor, Tensor]:
    rows, length = x.shape
    codes = x.new_empty((rows, row_bytes(length, bits)), dtype=code_dtype(bits, scheme))
    return codes, x.new_empty((rows,), dtype=torch.float32), x.new_empty((rows,), dtype=torch.int32)


@_op("quantize_weighted")
def quantize_weighted(x: Tensor, weight: Tensor, bits: int, scheme: str) -> Tuple[Tensor, Tensor, Tensor]:
    """:func:`quantize` with the ``"fisher"`` scale method: each row's clip ratio minimises the squared
    reconstruction error weighted by ``weight`` (x's shape, non-negative)."""
    return dispatch("quantize_weighted", x.contiguous(), weight.contiguous(), bits, scheme)


@quantize_weighted.register_fake
def _(x: Tensor, weight: Tensor, bits: int, scheme: str) -> Tuple[Tensor, Tensor, Tensor]:
    rows, length = x.shape
    codes = x.new_empty((rows, row_bytes(length, bits)), dtype=code_dtype(bits, scheme))
    return codes, x.new_empty((rows,), dtype=torch.float32), x.new_empty((rows,), dtype=torch.int32)


@_op("dequantize")
def dequantize(codes: Tensor, scale: Tensor, zero_point: Tensor, bits: int, scheme: str, length: int) -> Tensor:
    """(rows, length) float32 values of the codes made by :func:`quantize`."""
    check_code_rows(codes, scale, zero_point, bits, codes.shape[0], length)
    return dispatch("dequantize", codes.contiguous(), scale.contiguous(), zero_point.contiguous(), bits, scheme,
                    length)


@dequantize.register_fake
def _(codes: Tensor, scale: Tensor, zero_point: Tensor, bits: int, scheme: str, length: int) -> Tensor:
    return codes.new_empty((codes.shape[0], length), dtype=torch.float32)


@_op("dequantize_into", mutates_args=("out",))
def dequantize_into(codes: Tensor, scale: Tensor, zero_point: Tensor, bits: int, scheme: str, out: Tensor) -> None:
    """:func:`dequantize` written into the contiguous float32 ``out`` (rows, length): no fresh output memory."""
    check_code_rows(codes, scale, zero_point, bits, out.shape[0], out.shape[1])
    dispatch("dequantize_into", codes.contiguous(), scale.contiguous(), zero_point.contiguous(), bits, scheme, out)


@dequantize_into.register_fake
def _(codes: Tensor, scale: Tensor, zero_point: Tensor, bits: int, scheme: str, out: Tensor) -> None:
    return None


# --------------------------------------------------------------------------------------------------------------
# Knowledge distillation
# --------------------------------------------------------------------------------------------------------------


def _kd_loss_dtype(student: Tensor) -> torch.dtype:
    return torch.float64 if student.dtype == torch.float64 else torch.float32


def kd_reduction_scale(student: Tensor, target: Optional[Tensor], ignore_index: int, reduction: str) -> float:
    """The factor that turns the sum of per-row losses into the reduced loss (see :func:`fastdistill.kd_loss`)."""
    if reduction == "batchmean":
        return 1.0 / max(1, student.shape[0])
    if reduction == "mean":
        rows = student.numel() // student.shape[-1] if target is None else int((target != ignore_index).sum())
        return 1.0 / max(1, rows)
    return 1.0


@_op("kd_loss")
def kd_loss(student: Tensor, teacher: Tensor, target: Optional[Tensor], temperature: float, alpha: float,
            divergence: str, beta: float, ignore_index: int, reduction: str, teacher_log_probs: bool,
            weighting: str, compute_grad: bool) -> Tuple[Tensor, Tensor]:
    """(loss, grad): the reduced distillation loss and its gradient w.r.t. ``student``, computed in the same pass
    (an empty tensor unless ``compute_grad``). Arguments are validated by :func:`fastdistill.kd_loss`, the target's
    values here (also under torch.compile). A kernel applies ``weighting`` itself (it has the teacher's normaliser,
    hence its entropy, from its own softmax pass)."""
    V = student.shape[-1]
    s = student.contiguous().reshape(-1, V)
    t = teacher.contiguous().reshape(-1, V)
    y = None if target is None else target.contiguous().reshape(-1)
    check_classes(y, s.shape[0], V, ignore_index)
    scale = kd_reduction_scale(student, target, ignore_index, reduction)
    div = "none" if alpha == 0 else divergence
    row_loss, grad = dispatch("kd_loss", s, t, y, temperature, alpha, div, beta, ignore_index, scale,
                              teacher_log_probs, weighting, compute_grad)
    return _kd_outputs(student, row_loss, grad, reduction, scale)


def _kd_outputs(student: Tensor, row_loss: Tensor, grad: Optional[Tensor], reduction: str,
                scale: float) -> Tuple[Tensor, Tensor]:
    """The loss (reduced from the per-row losses) and the gradient in the student's shape and layout."""
    dtype = _kd_loss_dtype(student)
    if reduction == "none":
        loss = row_loss.to(dtype).reshape(student.shape[:-1])
    else:
        loss = (row_loss.sum(dtype=torch.float64) * scale).to(dtype)
    if grad is None:
        return loss, student.new_empty((0,))
    return loss, _like(grad.reshape(student.shape), student)


def _kd_fake(student: Tensor, reduction: str, compute_grad: bool) -> Tuple[Tensor, Tensor]:
    shape = student.shape[:-1] if reduction == "none" else ()
    grad = torch.empty_like(student) if compute_grad else student.new_empty((0,))
    return student.new_empty(shape, dtype=_kd_loss_dtype(student)), grad


@kd_loss.register_fake
def _(student: Tensor, teacher: Tensor, target: Optional[Tensor], temperature: float, alpha: float,
      divergence: str, beta: float, ignore_index: int, reduction: str, teacher_log_probs: bool, weighting: str,
      compute_grad: bool) -> Tuple[Tensor, Tensor]:
    return _kd_fake(student, reduction, compute_grad)


def _register_grad_in_forward(name: str, n_tensors: int, reduction_at: int) -> None:
    """Autograd for an op ``(tensor inputs..., other args..., compute_grad) -> (loss, grad)`` whose forward already
    computed ``grad``, the gradient of the loss w.r.t. its first input: backward only scales it. The first
    ``n_tensors`` inputs are tensors; ``inputs[reduction_at]`` is the reduction ("none": a per-row loss)."""

    def setup_context(ctx, inputs, output) -> None:
        # The gradient buffer is handed to the first backward (no copy: a reference kept here would make autograd
        # clone it into a leaf's .grad, doubling peak memory); the inputs are kept, by reference, only to recompute
        # it should backward run again through a retained graph.
        ctx.save_for_backward(*inputs[:n_tensors])
        ctx.args = inputs[n_tensors:-1]
        ctx.per_row = inputs[reduction_at] == "none"
        ctx.grad = [output[1]]
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)  # else autograd passes backward a logits-sized zeros tensor for output[1]

    def backward(ctx, grad_loss: Optional[Tensor], _grad_grad: Optional[Tensor]):
        nones = (None,) * (n_tensors + len(ctx.args))
        if grad_loss is None:
            return (None,) + nones
        grad = ctx.grad.pop() if ctx.grad else call(name, *ctx.saved_tensors, *ctx.args, True)[1]
        if grad.shape != ctx.saved_tensors[0].shape:  # the (0,) placeholder; an empty batch has a (0, V) gradient
            raise RuntimeError(f"fastdistill::{name} was called with compute_grad=False; its gradient was not computed")
        # Eager: scale the buffer we now own in place. Traced (torch.compile / AOT): out of place, and no branch on
        # the value; on CUDA no host sync either.
        traced = type(grad_loss) is not torch.Tensor
        if ctx.per_row:
            factor = grad_loss.unsqueeze(-1).to(grad.dtype)
            grad = grad * factor if traced else grad.mul_(factor)
        elif traced:
            grad = grad * grad_loss
        elif grad_loss.device.type != "cpu":
            grad = grad.mul_(grad_loss)
        elif float(grad_loss) != 1.0:  # the usual loss.backward() passes 1: the gradient is final, skip a pass
            grad = grad.mul_(float(grad_loss))
        return (grad,) + nones

    _register_autograd(name, backward, setup_context)


_register_grad_in_forward("kd_loss", 3, 8)


@_op("sparse_kd_loss")
def sparse_kd_loss(student: Tensor, indices: Tensor, values: Tensor, sampling_probs: Optional[Tensor],
                   target: Optional[Tensor], temperature: float, alpha: float, values_kind: str, tail: str,
                   ignore_index: int, reduction: str, compute_grad: bool) -> Tuple[Tensor, Tensor]:
    """(loss, grad) of the distillation loss against a sparse teacher (K entries per row: ``indices`` with their
    ``values``, and ``sampling_probs`` for importance-sampled entries), as :func:`kd_loss`. Arguments are
    validated by :func:`fastdistill.sparse_kd_loss`, the values of the target and of the teacher's entries here
    (also under torch.compile)."""
    V, K = student.shape[-1], indices.shape[-1]
    s = student.contiguous().reshape(-1, V)
    idx = indices.contiguous().reshape(-1, K)
    val = values.contiguous().reshape(-1, K)
    r = None if sampling_probs is None else sampling_probs.contiguous().reshape(-1, K)
    y = None if target is None else target.contiguous().reshape(-1)
    check_sparse_teacher(idx, val, r, values_kind, s.shape[0], V)
    check_classes(y, s.shape[0], V, ignore_index)
    scale = kd_reduction_scale(student, target, ignore_index, reduction)
    row_loss, grad = dispatch("sparse_kd_loss", s, idx, val, r, y, temperature, alpha, values_kind, tail,
                              ignore_index, scale, compute_grad)
    return _kd_outputs(student, row_loss, grad, reduction, scale)


@sparse_kd_loss.register_fake
def _(student: Tensor, indices: Tensor, values: Tensor, sampling_probs: Optional[Tensor], target: Optional[Tensor],
      temperature: float, alpha: float, values_kind: str, tail: str, ignore_index: int, reduction: str,
      compute_grad: bool) -> Tuple[Tensor, Tensor]:
    return _kd_fake(student, reduction, compute_grad)


_register_grad_in_forward("sparse_kd_loss", 5, 10)


# --------------------------------------------------------------------------------------------------------------
# Sparse (CSR) matmul. The weight travels as its CSR components (see fastdistill.sparse.SparseWeight): indptr
# int64 (rows + 1), indices int16 (unsigned 16-bit column indices, used when cols <= 65536) or int32, values
# float32 or bfloat16, or int8 codes with ``scale`` (float32, one per row: W[n, c] = scale[n] * code; None for float
# values). Outputs have x's dtype.
# --------------------------------------------------------------------------------------------------------------


@_op("sparse_linear")
def sparse_linear(
    x: Tensor, indptr: Tensor, indices: Tensor, values: Tensor, cols: int, bias: Optional[Tensor],
    scale: Optional[Tensor] = None,
) -> Tensor:
    """x (M, cols) @ W^T + bias -> (M, rows)."""
    b = None if bias is None else bias.contiguous()
    s = None if scale is None else scale.contiguous()
    return dispatch("sparse_linear", x.contiguous(), indptr.contiguous(), indices.contiguous(), values.contiguous(),
                    cols, b, s)


@sparse_linear.register_fake
def _(x: Tensor, indptr: Tensor, indices: Tensor, values: Tensor, cols: int, bias: Optional[Tensor],
      scale: Optional[Tensor] = None) -> Tensor:
    return x.new_empty((x.shape[0], indptr.shape[0] - 1))


@_op("spmm")
def spmm(indptr: Tensor, indices: Tensor, values: Tensor, cols: int, b: Tensor,
         scale: Optional[Tensor] = None) -> Tensor:
    """W @ b for b (cols, M) -> (rows, M)."""
    s = None if scale is None else scale.contiguous()
    return dispatch("spmm", indptr.contiguous(), indices.contiguous(), values.contiguous(), cols, b.contiguous(), s)


@spmm.register_fake
def _(indptr: Tensor, indices: Tensor, values: Tensor, cols: int, b: Tensor,
      scale: Optional[Tensor] = None) -> Tensor:
    return b.new_empty((indptr.shape[0] - 1, b.shape[1]))


def _sparse_linear_setup(ctx, inputs, output) -> None:
    x, indptr, indices, values, cols, bias, scale = inputs
    ctx.save_for_backward(indptr, indices, values, scale)
    ctx.cols = cols


def _sparse_linear_backward(ctx, grad: Tensor):
    """Gradient for x only (the CSR weight is not trainable): grad @ W = sparse_linear(grad, W^T), with W^T built
    as CSR by a stable sort of the nonzeros by column (static shapes, so it traces). int8 values are dequantized
    (W^T's scale runs along its columns, which the kernels do not take)."""
    indptr, indices, values, scale = ctx.saved_tensors
    if scale is not None:
        values = dequantized(indptr, values, scale)
    rows, nnz = indptr.numel() - 1, values.numel()
    col = columns(indices)
    row = torch.repeat_interleave(torch.arange(rows, device=indptr.device), indptr.diff(), output_size=nnz)
    order = torch.sort(col, stable=True).indices
    counts = torch.zeros(ctx.cols, dtype=torch.int64, device=indptr.device).index_add_(0, col, torch.ones_like(col))
    t_indptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    t_indices = row[order].to(torch.int32)
    t_indices = t_indices.to(torch.int16) if rows <= 65536 else t_indices
    grad_x = call("sparse_linear", grad.contiguous(), t_indptr, t_indices, values[order], rows, None)
    return grad_x, None, None, None, None, None, None


_register_autograd("sparse_linear", _sparse_linear_backward, _sparse_linear_setup)


# --------------------------------------------------------------------------------------------------------------
# int8 matrix multiply and dynamic-quantization linear layer
# --------------------------------------------------------------------------------------------------------------


# The native backend packs int8 weights into its own panel layout once (see fastdistill.int8.prepack_int8_weight):
# a preparation step, not an op, looked up with _dispatch.backend_kernel.
declare_op("int8_pack", preparation=True)


@_op("int8_mm")
def int8_mm(a: Tensor, b: Tensor) -> Tensor:
    """int8 (M x K) @ int8 (K x N) -> int32 (M x N), exact (int32 sums wrap modulo 2^32)."""
    return dispatch("int8_mm", a.contiguous(), b.contiguous())


@int8_mm.register_fake
def _(a: Tensor, b: Tensor) -> Tensor:
    return a.new_empty((a.shape[0], b.shape[1]), dtype=torch.int32)


@_op("int8_mm_packed")
def int8_mm_packed(a: Tensor, codes: Tensor, packed: Tensor, comp: Tensor) -> Tensor:
    """int8 ``a`` (M x K) @ ``codes.T`` -> int32 (M x N); ``packed``/``comp``: codes in the native kernel's layout."""
    return dispatch("int8_mm_packed", a.contiguous(), codes, packed, comp)


@int8_mm_packed.register_fake
def _(a: Tensor, codes: Tensor, packed: Tensor, comp: Tensor) -> Tensor:
    return a.new_empty((a.shape[0], codes.shape[0]), dtype=torch.int32)


@_op("int8_linear")
def int8_linear(x: Tensor, codes: Tensor, wscale: Tensor, packed: Tensor, comp: Tensor,
                bias: Optional[Tensor]) -> Tensor:
    """fp32 (M x N): ``x`` (M x K fp32/bf16) quantized per row, times int8 ``codes.T``, dequantized, + bias."""
    return dispatch("int8_linear", x.contiguous(), codes, wscale, packed, comp, bias)


@int8_linear.register_fake
def _(x: Tensor, codes: Tensor, wscale: Tensor, packed: Tensor, comp: Tensor, bias: Optional[Tensor]) -> Tensor:
    return x.new_empty((x.shape[0], codes.shape[0]), dtype=torch.float32)


# --------------------------------------------------------------------------------------------------------------
# Data compression (fastdistill.data): nearest-centroid assignment, 8-bit bin codes and their joint histograms,
# per-column linear codes and closed-loop delta codes of a (samples, features) matrix. Arguments are validated by
# fastdistill.data; see backends/python/data.py for the exact definitions.
# --------------------------------------------------------------------------------------------------------------


@_op("kmeans_assign")
def kmeans_assign(x: Tensor, centroids: Tensor) -> Tuple[Tensor, Tensor]:
    """(labels int64 (n,), squared distances float32 (n,)) of each row of the float32 ``x`` (n, d) to its nearest
    row of ``centroids`` (k, d); ties go to the smaller index."""
    return dispatch("kmeans_assign", x.contiguous(), centroids.contiguous())


@kmeans_assign.register_fake
def _(x: Tensor, centroids: Tensor) -> Tuple[Tensor, Tensor]:
    n = x.shape[0]
    return x.new_empty((n,), dtype=torch.int64), x.new_empty((n,), dtype=torch.float32)


@_op("centroid_sums")
def centroid_sums(x: Tensor, labels: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """(sums float64 (k, d), counts int64 (k,)) of the rows of the float32 ``x`` (n, d) per label in [0, k)."""
    return dispatch("centroid_sums", x.contiguous(), labels.contiguous(), k)


@centroid_sums.register_fake
def _(x: Tensor, labels: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    return x.new_empty((k, x.shape[1]), dtype=torch.float64), x.new_empty((k,), dtype=torch.int64)


@_op("column_stats")
def column_stats(x: Tensor) -> Tensor:
    """float64 (6, d) per-column statistics of the float32 ``x`` (n, d) in one pass: min, max, sum |x|, max |x|,
    smallest nonzero |x| (inf if none), largest |x[i+1] - x[i]| down the rows (0 for n < 2)."""
    return dispatch("column_stats", x.contiguous())


@column_stats.register_fake
def _(x: Tensor) -> Tensor:
    return x.new_empty((6, x.shape[1]), dtype=torch.float64)


@_op("bin_codes")
def bin_codes(x: Tensor, edges: Tensor) -> Tensor:
    """uint8 codes (d, n), feature-major: the number of ``edges[j]`` (ascending, at most 255) <= ``x[i, j]``."""
    return dispatch("bin_codes", x.contiguous(), edges.contiguous())


@bin_codes.register_fake
def _(x: Tensor, edges: Tensor) -> Tensor:
    return x.new_empty((x.shape[1], x.shape[0]), dtype=torch.uint8)


@_op("joint_histograms")
def joint_histograms(codes: Tensor, target: Tensor, n_target: int, n_bins: int) -> Tensor:
    """int64 (d, n_target, n_bins): joint counts of each row of the uint8 ``codes`` (d, n) with the int32
    ``target`` (n,) in [0, n_target)."""
    return dispatch("joint_histograms", codes.contiguous(), target.contiguous(), n_target, n_bins)


@joint_histograms.register_fake
def _(codes: Tensor, target: Tensor, n_target: int, n_bins: int) -> Tensor:
    return codes.new_empty((codes.shape[0], n_target, n_bins), dtype=torch.int64)


@_op("quantize_columns")
def quantize_columns(x: Tensor, scale: Tensor, offset: Tensor, qmin: int, qmax: int) -> Tensor:
    """Codes (n, d), int8 when ``qmin < 0`` else uint8: clamp(round((x - offset[j]) / scale[j]), qmin, qmax)."""
    return dispatch("quantize_columns", x.contiguous(), scale.contiguous(), offset.contiguous(), qmin, qmax)


@quantize_columns.register_fake
def _(x: Tensor, scale: Tensor, offset: Tensor, qmin: int, qmax: int) -> Tensor:
    return torch.empty_like(x, dtype=torch.int8 if qmin < 0 else torch.uint8)


@_op("dequantize_columns")
def dequantize_columns(codes: Tensor, scale: Tensor, offset: Tensor) -> Tensor:
    """float32 (n, d) = codes * scale[j] + offset[j]."""
    return dispatch("dequantize_columns", codes.contiguous(), scale.contiguous(), offset.contiguous())


@dequantize_columns.register_fake
def _(codes: Tensor, scale: Tensor, offset: Tensor) -> Tensor:
    return torch.empty_like(codes, dtype=torch.float32)


@_op("delta_encode")
def delta_encode(x: Tensor, anchor_scale: Tensor, step_scale: Tensor, block: int, qmax: int) -> Tensor:
    """int8 closed-loop delta codes (n, d) of ``x`` along its rows, re-anchored every ``block`` rows."""
    return dispatch("delta_encode", x.contiguous(), anchor_scale.contiguous(), step_scale.contiguous(), block, qmax)


@delta_encode.register_fake
def _(x: Tensor, anchor_scale: Tensor, step_scale: Tensor, block: int, qmax: int) -> Tensor:
    return torch.empty_like(x, dtype=torch.int8)


@_op("delta_decode")
def delta_decode(codes: Tensor, anchor_scale: Tensor, step_scale: Tensor, block: int) -> Tensor:
    """float32 (n, d): the values the encoder tracked (inverse of :func:`delta_encode`)."""
    return dispatch("delta_decode", codes.contiguous(), anchor_scale.contiguous(), step_scale.contiguous(), block)


@delta_decode.register_fake
def _(codes: Tensor, anchor_scale: Tensor, step_scale: Tensor, block: int) -> Tensor:
    return torch.empty_like(codes, dtype=torch.float32)
# int4 weight-only linear layer (weights: packed int4 codes with one fp32 scale per group of input channels)
# --------------------------------------------------------------------------------------------------------------


# Native preparation steps: the kernel's own weight layout, and its measured W4A8 / W4A16 crossover (rows).
declare_op("int4_pack", preparation=True)
declare_op("int4_a8_min_rows", preparation=True)


@_op("int4_linear")
def int4_linear(x: Tensor, codes: Tensor, scale: Tensor, packed: Tensor, bias: Optional[Tensor], group_size: int,
                act_int8: bool) -> Tensor:
    """fp32 (M x N): ``x`` (M x K fp32/bf16) times the int4 weight ``codes`` (N x K/2) with group ``scale``
    (N x K/group_size), + bias; ``act_int8``: x quantized per row to int8 first (W4A8), else float (W4A16)."""
    return dispatch("int4_linear", x.contiguous(), codes, scale, packed, bias, group_size, act_int8)


@int4_linear.register_fake
def _(x: Tensor, codes: Tensor, scale: Tensor, packed: Tensor, bias: Optional[Tensor], group_size: int,
      act_int8: bool) -> Tensor:
    return x.new_empty((x.shape[0], codes.shape[0]), dtype=torch.float32)


# --------------------------------------------------------------------------------------------------------------
# Activation-aware pruning (Wanda)
# --------------------------------------------------------------------------------------------------------------


@_op("wanda_mask")
def wanda_mask(w: Tensor, norms: Tensor, k: int) -> Tensor:
    """Keep-mask (bool, w's shape) pruning in each row of the 2-D ``w`` the ``k`` lowest scores
    ``|w[i, j]| * norms[j]`` (fp32 product; ties: lower column first)."""
    return dispatch("wanda_mask", w.contiguous(), norms.contiguous(), k)


@wanda_mask.register_fake
def _(w: Tensor, norms: Tensor, k: int) -> Tensor:
    return torch.empty_like(w, dtype=torch.bool, memory_format=torch.contiguous_format)
