"""Distillation loss fused with the LM heads: logits are made chunk by chunk and never held whole.

For each chunk of rows the student's and the teacher's logits are computed with torch's BLAS (``F.linear``), the
fused ``kd_loss`` kernel turns them into row losses and the gradient w.r.t. the student's logits in one pass, and
that gradient is immediately folded into the gradients of the student's hidden states, weight and bias (two more
GEMMs). Peak extra memory is three chunk-sized logits buffers plus the gradients themselves, instead of the several
(rows x vocabulary) tensors of ``F.linear`` + ``kd_loss`` (or the torch expression).
"""
from __future__ import annotations

import numbers
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._convert import check_float
from ._dispatch import dispatch
from ._kd_checks import check_classes
from ._ops import kd_reduction_scale
from .kd import check_divergence, check_options, check_target

_CHUNK_ELEMENTS = 1 << 22  # one chunk of logits: 4 Mi elements (16 MiB in fp32)


def default_chunk_size(vocab_size: int) -> int:
    """Rows per chunk: a power of two with about 4 Mi logits per chunk, at least 16 rows (GEMM efficiency)."""
    rows = max(1, _CHUNK_ELEMENTS // max(1, vocab_size))
    return max(16, 1 << (rows.bit_length() - 1))


class _Options:
    __slots__ = ("temperature", "alpha", "divergence", "beta", "ignore_index", "reduction", "scale", "chunk")

    def __init__(self, temperature: float, alpha: float, divergence: str, beta: float, ignore_index: int,
                 reduction: str, scale: float, chunk: int):
        self.temperature, self.alpha, self.beta = temperature, alpha, beta
        self.divergence = "none" if alpha == 0 else divergence
        self.ignore_index, self.reduction, self.scale, self.chunk = ignore_index, reduction, scale, chunk


def _chunked_pass(hs: Tensor, ws: Tensor, bs: Optional[Tensor], ht: Tensor, wt: Tensor, bt: Optional[Tensor],
                  y: Optional[Tensor], opt: _Options, needs: Tuple[bool, bool, bool],
                  row_weights: Optional[Tensor] = None) -> Tuple[Tensor, List[Optional[Tensor]]]:
    """Row losses (unscaled) and, for each of (hidden, weight, bias) in ``needs``, ``opt.scale`` times its gradient
    (rows weighted by ``row_weights`` when given), accumulated over chunks of ``opt.chunk`` rows."""
    rows = hs.shape[0]
    want_grad = any(needs)
    acc = torch.float64 if ws.dtype == torch.float64 else torch.float32  # the losses, and weight/bias sums over chunks
    row_loss = torch.empty(rows, dtype=acc, device=hs.device)
    grad_h = torch.empty_like(hs) if needs[0] else None
    grad_w = None  # made by the first chunk's GEMM (no zero fill, no read-back of a weight-sized buffer)
    grad_b = torch.zeros(ws.shape[0], dtype=acc, device=ws.device) if needs[2] else None
    for start in range(0, rows, opt.chunk):
        stop = min(rows, start + opt.chunk)
        h = hs[start:stop]
        s = F.linear(h, ws, bs)
        t = F.linear(ht[start:stop], wt, bt)
        loss, g = dispatch("kd_loss", s, t, None if y is None else y[start:stop], opt.temperature, opt.alpha,
                           opt.divergence, opt.beta, opt.ignore_index, opt.scale, False, "none", want_grad)
        row_loss[start:stop] = loss
        del s, t  # free before the GEMMs below, and g at the end: the next chunk's logits must not meet them
        if not want_grad:
            continue
        if row_weights is not None:
            g.mul_(row_weights[start:stop, None].to(g.dtype))
        if grad_h is not None:
            torch.mm(g, ws, out=grad_h[start:stop])
        if needs[1]:
            if grad_w is None:
                grad_w = torch.mm(g.t(), h).to(acc)
            elif g.dtype == acc:
                grad_w.addmm_(g.t(), h)
            else:  # low-precision GEMM per chunk (its own fp32 accumulation), summed over chunks in fp32
                grad_w.add_(torch.mm(g.t(), h))
        if grad_b is not None:
            grad_b.add_(g.sum(0, dtype=acc))
        del g
    if needs[1] and grad_w is None:  # no rows
        grad_w = torch.zeros(ws.shape, dtype=acc, device=ws.device)
    grads = [grad_h, None if grad_w is None else grad_w.to(ws.dtype), None if grad_b is None else grad_b.to(ws.dtype)]
    return row_loss, grads


class _FusedLinearKD(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hs, ws, bs, ht, wt, bt, y, opt: _Options):
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], bs is not None and ctx.needs_input_grad[2])
        ctx.opt, ctx.needs = opt, needs
        ctx.save_for_backward(hs, ws, bs, ht, wt, bt, y)
        # reduction="none": the gradient depends on the per-row grad_output, so backward recomputes it.
        eager = needs if opt.reduction != "none" else (False, False, False)
        row_loss, grads = _chunked_pass(hs, ws, bs, ht, wt, bt, y, opt, eager)
        ctx.grads = [grads] if any(eager) else []
        if opt.reduction == "none":
            return row_loss
        return (row_loss.sum(dtype=torch.float64) * opt.scale).to(row_loss.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        opt = ctx.opt
        if opt.reduction == "none":
            grads = _chunked_pass(*ctx.saved_tensors, opt, ctx.needs, row_weights=grad_out.reshape(-1))[1]
        else:
            # The gradients made in forward are handed over once; a second backward (retain_graph) recomputes.
            grads = ctx.grads.pop() if ctx.grads else _chunked_pass(*ctx.saved_tensors, opt, ctx.needs)[1]
            if float(grad_out) != 1.0:  # loss.backward() passes 1: the gradients are final
                grads = [None if g is None else g.mul_(float(grad_out)) for g in grads]
        return grads[0], grads[1], grads[2], None, None, None, None, None


def _check_tensor(x: object, name: str, dims: Tuple[int, ...]) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    check_float(x, name)
    if x.dim() not in dims:
        raise ValueError(f"{name}: expected {' or '.join(f'{d}-D' for d in dims)}, got shape {tuple(x.shape)}")
    return x


def fused_linear_kd_loss(
    student_hidden: Tensor,
    student_weight: Tensor,
    teacher_hidden: Tensor,
    teacher_weight: Tensor,
    target: Optional[Tensor] = None,
    *,
    student_bias: Optional[Tensor] = None,
    teacher_bias: Optional[Tensor] = None,
    chunk_size: Optional[int] = None,
    temperature: float = 1.0,
    alpha: float = 0.5,
    divergence: str = "kl",
    beta: float = 0.5,
    ignore_index: int = -100,
    reduction: str = "batchmean",
) -> Tensor:
    r"""``kd_loss(student_hidden @ student_weight.T + student_bias, teacher_hidden @ teacher_weight.T +
    teacher_bias, target, ...)`` without ever holding a whole logits tensor.

    Rows are processed ``chunk_size`` at a time (default :func:`default_chunk_size`: about 4 Mi logits per chunk,
    e.g. 128 rows for a 32000-word vocabulary): per chunk, both LM heads run through torch's BLAS, the fused kernel of
    :func:`fastdistill.kd_loss` computes the row losses and the gradient w.r.t. the chunk's student logits, and that
    gradient is folded at once into the gradients of ``student_hidden``, ``student_weight`` and ``student_bias`` (the
    teacher is treated as frozen: no gradient flows to its tensors). The loss and its gradients equal those of
    ``kd_loss`` on the full logits (up to the order of floating-point sums across chunks).

    * Shapes: ``student_hidden`` ``(N, d_s)`` or ``(B, T, d_s)``; ``teacher_hidden`` the same leading shape with
      ``d_t`` features; ``student_weight`` ``(V, d_s)``, ``teacher_weight`` ``(V, d_t)``; biases ``(V,)``;
      ``target`` the leading shape (class indices, ``ignore_index`` rows skipped) or None.
    * ``temperature``, ``alpha``, ``divergence``, ``beta``, ``ignore_index``, ``reduction``: as in
      :func:`fastdistill.kd_loss`, with the same reduction formulas (``"batchmean"`` divides by ``B``, the first
      dimension of ``student_hidden``). ``reduction="none"`` returns per-row losses; its gradient is recomputed in
      backward (it depends on the per-row incoming gradient), the others' gradients are made during forward.
    * Dtypes: fp32, bf16, fp16 or fp64 tensors; the logits chunk is in the student's dtype, losses are accumulated
      in fp32 (fp64 for fp64), the weight and bias gradients are summed over chunks in fp32.

    Example::

        >>> hs = torch.randn(64, 32, requires_grad=True)
        >>> head = torch.nn.Linear(32, 1000)
        >>> ht, teacher_head = torch.randn(64, 48), torch.randn(1000, 48)
        >>> y = torch.randint(0, 1000, (64,))
        >>> loss = fastdistill.fused_linear_kd_loss(hs, head.weight, ht, teacher_head, y, student_bias=head.bias,
        ...                                         temperature=2.0, chunk_size=16)
        >>> loss.backward()
        >>> head.weight.grad.shape
        torch.Size([1000, 32])
    """
    hs = _check_tensor(student_hidden, "student_hidden", (2, 3))
    ws = _check_tensor(student_weight, "student_weight", (2,))
    ht = _check_tensor(teacher_hidden, "teacher_hidden", (2, 3))
    wt = _check_tensor(teacher_weight, "teacher_weight", (2,))
    if ws.shape[1] != hs.shape[-1]:
        raise ValueError(f"student_weight: expected shape (V, {hs.shape[-1]}) to match student_hidden's "
                         f"{hs.shape[-1]} features, got {tuple(ws.shape)}")
    V = ws.shape[0]
    if V == 0:
        raise ValueError("student_weight: expected at least one class (V >= 1 rows)")
    if ht.shape[:-1] != hs.shape[:-1]:
        raise ValueError(f"teacher_hidden: expected leading shape {tuple(hs.shape[:-1])} (the student's), got "
                         f"{tuple(ht.shape)}")
    if wt.shape != (V, ht.shape[-1]):
        raise ValueError(f"teacher_weight: expected shape ({V}, {ht.shape[-1]}), got {tuple(wt.shape)}")
    for name, b in (("student_bias", student_bias), ("teacher_bias", teacher_bias)):
        if b is not None and _check_tensor(b, name, (1,)).shape != (V,):
            raise ValueError(f"{name}: expected shape ({V},), got {tuple(b.shape)}")
    for side, h, w, b in (("student", hs, ws, student_bias), ("teacher", ht, wt, teacher_bias)):
        for name, x in ((f"{side}_weight", w), (f"{side}_bias", b)):
            if x is not None and x.dtype != h.dtype:
                raise TypeError(f"{name}: expected {side}_hidden's dtype {h.dtype}, got {x.dtype}")
    tensors = [hs, ws, ht, wt] + [b for b in (student_bias, teacher_bias) if b is not None]
    if len({x.device for x in tensors}) > 1:
        raise ValueError("student_hidden, student_weight, teacher_hidden, teacher_weight and the biases: expected "
                         f"one device, got {sorted({str(x.device) for x in tensors})}")
    divergence, beta = check_divergence(divergence, beta)
    temperature, alpha, reduction = check_options(temperature, alpha, ignore_index, reduction)
    y = check_target(target, hs.shape[:-1], V, hs.device, ignore_index, alpha)
    if y is not None and not torch.compiler.is_compiling():  # traced, the kernels check it per chunk
        check_classes(y.reshape(-1), y.numel(), V, int(ignore_index))
    if chunk_size is None:
        chunk = default_chunk_size(V)
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int or None, got {chunk_size!r}")
    else:
        chunk = int(chunk_size)
    scale = kd_reduction_scale(hs, y, int(ignore_index), reduction)
    opt = _Options(temperature, alpha, divergence, beta, int(ignore_index), reduction, scale, chunk)
    flat = lambda x: x.reshape(-1, x.shape[-1]).contiguous()  # noqa: E731
    loss = _FusedLinearKD.apply(flat(hs), ws.contiguous(), student_bias, flat(ht), wt.detach().contiguous(),
                                None if teacher_bias is None else teacher_bias.detach(),
                                None if y is None else y.reshape(-1), opt)
    return loss.reshape(hs.shape[:-1]) if reduction == "none" else loss
