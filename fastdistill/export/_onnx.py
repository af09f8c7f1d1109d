"""ONNX export of compressed models, with standard operators only (any ONNX runtime runs the file).

fastdistill's layers become:

* :class:`~fastdistill.nn.Int8Linear`: the computation it performs, exactly: each row of ``x`` quantized to int8
  (``s = ReduceMax(|x|) / 127``, ``q = Cast(Clip(Round(x / s), -127, 127))``; ONNX ``Round`` is half-to-even like
  torch), ``MatMulInteger(q, W_int8)`` (exact int32), ``Cast`` to float, times the row scale and the per-channel
  weight scales, plus the bias; outlier channels add their fp32 product. The int8 weight is stored as int8.
* :class:`~fastdistill.nn.Int4Linear`: its W4A16 form: the packed int4 codes (stored packed, two per byte) unpacked
  with integer ops, times the group scales, ``MatMul`` in float (a runtime folds the constant dequantization
  once, at load). A PyTorch model running the W4A8 route (large batches) differs by the activation rounding.
* :class:`~fastdistill.nn.Int8Conv2d`: ``DequantizeLinear`` of the int8 weight (per-channel scales, ``axis=0``)
  into a float ``Conv`` (weight-only: the PyTorch layer also rounds its activations to int8).
* :class:`~fastdistill.nn.QuantizedEmbedding`: ``Gather`` of the codes and scales, dequantized per row.
* :class:`~fastdistill.nn.SparseLinear` (and pruned dense layers): a dense ``MatMul``/``Gemm`` whose weight is a
  ``sparse_initializer`` where the COO form is smaller than the dense one (``sparse=True`` always, ``False``
  never).

The graph is recorded by ``torch.onnx.export``'s TorchScript tracer (``dynamo=False``; the torch.export-based
exporter needs the ``onnxscript`` package), which runs the model once on ``example_inputs``.
"""
from __future__ import annotations

import copy
import os
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..compress.structure import batches_of
from ..nn import Int4Linear, Int8Conv2d, Int8Linear, QuantizedEmbedding, SparseLinear

SPARSE_CHOICES = ("auto", True, False)
_INT8 = 3  # onnx.TensorProto.INT8
_INT32 = 6
_FLOAT = 1


def _untraced(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` with the tracer paused: the exporter records the autograd.Function calling this as one node
    (written by its ``symbolic``), not the ops inside."""
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        return module(x)
    finally:
        torch._C._set_tracing_state(state)


def _const(g, value: Union[float, int, Sequence[int]], dtype: torch.dtype = torch.float32):
    return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))


def _buffers(module: nn.Module, **tensors: Optional[Tensor]) -> None:
    """Registers the tensors as buffers (the exporter writes buffers as initializers, plain attributes as inline
    constants)."""
    for name, t in tensors.items():
        module.register_buffer(name, t)


class _Int8LinearOp(torch.autograd.Function):
    """Int8Linear's forward when traced for ONNX; ``symbolic`` writes its standard-operator form."""

    @staticmethod
    def forward(ctx, x, module_ref, codes, wscale, bias, keep, outlier_weight):  # type: ignore[override]
        return _untraced(module_ref[0], x)

    @staticmethod
    def symbolic(g, x, module_ref, codes, wscale, bias, keep, outlier_weight):
        xin = g.op("Mul", x, keep) if keep is not None else x
        amax = g.op("ReduceMax", g.op("Abs", xin), axes_i=[-1], keepdims_i=1)
        s = g.op("Div", amax, _const(g, 127.0))
        zero = g.op("Equal", s, _const(g, 0.0))
        div = g.op("Where", zero, _const(g, 1.0), s)
        q = g.op("Clip", g.op("Round", g.op("Div", xin, div)), _const(g, -127.0), _const(g, 127.0))
        acc = g.op("MatMulInteger", g.op("Cast", q, to_i=_INT8), g.op("Transpose", codes, perm_i=[1, 0]))
        y = g.op("Mul", g.op("Mul", g.op("Cast", acc, to_i=_FLOAT), s), wscale)
        if bias is not None:
            y = g.op("Add", y, bias)
        if outlier_weight is not None:
            xo = g.op("Sub", x, xin)  # the outlier channels (others 0)
            y = g.op("Add", y, g.op("MatMul", xo, g.op("Transpose", outlier_weight, perm_i=[1, 0])))
        return y


class _Int8LinearExport(nn.Module):
    def __init__(self, q: Int8Linear):
        super().__init__()
        self.ref = [q]
        keep = outlier_weight = None
        if q.outlier_channels.numel():
            keep = torch.ones(q.in_features).index_fill(0, q.outlier_channels, 0.0)
            outlier_weight = torch.zeros(q.out_features, q.in_features)
            outlier_weight[:, q.outlier_channels] = q.outlier_weight
        _buffers(self, codes=q.weight_int8, wscale=q.weight_scale, bias=q.bias, keep=keep,
                 outlier_weight=outlier_weight)

    def forward(self, x: Tensor) -> Tensor:
        return _Int8LinearOp.apply(x, self.ref, self.codes, self.wscale, self.bias, self.keep, self.outlier_weight)


def _unpack_int4(g, codes, length: int):
    """ONNX ops turning packed int4 fields (rows, length/2 uint8; low nibble first, code + 8) into float codes."""
    c = g.op("Cast", codes, to_i=_INT32)
    hi = g.op("Div", c, _const(g, 16, torch.int32))
    lo = g.op("Sub", c, g.op("Mul", hi, _const(g, 16, torch.int32)))
    pairs = g.op("Concat", g.op("Unsqueeze", lo, _const(g, [-1], torch.int64)),
                 g.op("Unsqueeze", hi, _const(g, [-1], torch.int64)), axis_i=-1)
    flat = g.op("Reshape", pairs, _const(g, [-1, length], torch.int64))
    return g.op("Sub", g.op("Cast", flat, to_i=_FLOAT), _const(g, 8.0))


def _grouped(g, codes_f, scale, length: int, group_size: int):
    """codes (rows, length) float times scale (rows, length / group_size), back to (rows, length)."""
    groups = g.op("Reshape", codes_f, _const(g, [-1, length // group_size, group_size], torch.int64))
    scaled = g.op("Mul", groups, g.op("Unsqueeze", scale, _const(g, [-1], torch.int64)))
    return g.op("Reshape", scaled, _const(g, [-1, length], torch.int64))


class _Int4LinearOp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, module_ref, codes, scale, bias):  # type: ignore[override]
        return _untraced(module_ref[0], x)

    @staticmethod
    def symbolic(g, x, module_ref, codes, scale, bias):
        q = module_ref[0]
        w = _grouped(g, _unpack_int4(g, codes, q.in_features), scale, q.in_features, q.group_size)
        y = g.op("MatMul", x, g.op("Transpose", w, perm_i=[1, 0]))
        return g.op("Add", y, bias) if bias is not None else y


class _Int4LinearExport(nn.Module):
    def __init__(self, q: Int4Linear):
        super().__init__()
        self.ref = [q]
        _buffers(self, codes=q.weight_int4, scale=q.weight_scale, bias=q.bias)

    def forward(self, x: Tensor) -> Tensor:
        return _Int4LinearOp.apply(x, self.ref, self.codes, self.scale, self.bias)


class _Int8ConvOp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, module_ref, codes, scale, bias):  # type: ignore[override]
        return _untraced(module_ref[0], x).contiguous()

    @staticmethod
    def symbolic(g, x, module_ref, codes, scale, bias):
        q = module_ref[0]
        zero = _const(g, [0] * q.out_channels, torch.int8)
        w = g.op("DequantizeLinear", codes, scale, zero, axis_i=0)
        args = [x, w] + ([bias] if bias is not None else [])
        (ph, pw) = q.padding
        return g.op("Conv", *args, kernel_shape_i=list(q.kernel_size), strides_i=list(q.stride),
                    pads_i=[ph, pw, ph, pw], dilations_i=list(q.dilation), group_i=1)


class _Int8ConvExport(nn.Module):
    def __init__(self, q: Int8Conv2d):
        super().__init__()
        self.ref = [q]
        kh, kw = q.kernel_size
        codes = q.weight_int8.reshape(q.out_channels, kh, kw, q.in_channels).permute(0, 3, 1, 2).contiguous()
        _buffers(self, codes=codes, scale=q.weight_scale, bias=q.bias)

    def forward(self, x: Tensor) -> Tensor:
        return _Int8ConvOp.apply(x, self.ref, self.codes, self.scale, self.bias)


class _EmbeddingOp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, indices, module_ref, codes, scale):  # type: ignore[override]
        return _untraced(module_ref[0], indices)

    @staticmethod
    def symbolic(g, indices, module_ref, codes, scale):
        q = module_ref[0]
        d = q.embedding_dim
        rows = g.op("Gather", codes, indices, axis_i=0)
        shape = g.op("Shape", indices)
        flat_rows = g.op("Reshape", rows, _const(g, [-1, codes.type().sizes()[1]], torch.int64))
        if q.bits == 4:
            vals = _unpack_int4(g, flat_rows, d)
        else:
            vals = g.op("Cast", flat_rows, to_i=_FLOAT)
        flat_scale = g.op("Reshape", g.op("Gather", scale, indices, axis_i=0),
                          _const(g, [-1, d // q.group_size], torch.int64))
        out = _grouped(g, vals, flat_scale, d, q.group_size)
        return g.op("Reshape", out, g.op("Concat", shape, _const(g, [d], torch.int64), axis_i=0))


class _EmbeddingExport(nn.Module):
    def __init__(self, q: QuantizedEmbedding):
        super().__init__()
        self.ref = [q]
        _buffers(self, codes=q.weight_codes, scale=q.weight_scale)

    def forward(self, indices: Tensor) -> Tensor:
        return _EmbeddingOp.apply(indices, self.ref, self.codes, self.scale)


def _for_export(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with fastdistill's layers replaced by their ONNX-exportable twins."""
    m = copy.deepcopy(model).eval()
    twins = {Int8Linear: _Int8LinearExport, Int4Linear: _Int4LinearExport, Int8Conv2d: _Int8ConvExport,
             QuantizedEmbedding: _EmbeddingExport, SparseLinear: lambda s: s.to_linear()}
    for name, module in list(m.named_modules()):
        make = twins.get(type(module))
        if make is None:
            continue
        if not name:
            raise ValueError(f"model: a bare {type(module).__name__} cannot be exported; wrap it in a module")
        parent, _, child = name.rpartition(".")
        setattr(m.get_submodule(parent), child, make(module))
    return m


class _Positional(nn.Module):
    """Calls the model with keyword tensors given positionally (the tracer passes positional inputs only) and
    returns plain tuples (Hugging Face ModelOutputs are dicts)."""

    def __init__(self, model: nn.Module, keys: Optional[List[str]]):
        super().__init__()
        self.model, self.keys = model, keys
        self.output_keys: Optional[List[str]] = None  # the names of a dict output, once run

    def forward(self, *inputs: Tensor) -> Any:
        out = self.model(**dict(zip(self.keys, inputs))) if self.keys is not None else self.model(*inputs)
        if isinstance(out, Mapping):
            self.output_keys = [k for k, v in out.items() if isinstance(v, Tensor)]
            return tuple(out[k] for k in self.output_keys)
        return out


def _arguments(batch: Any) -> Tuple[Tuple[Any, ...], Optional[List[str]], List[str]]:
    """(positional tensors, keyword names or None, input names) of one example batch."""
    if isinstance(batch, Mapping):
        keys = [k for k, v in batch.items() if isinstance(v, Tensor)]
        return tuple(batch[k] for k in keys), keys, keys
    args = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
    if not all(isinstance(a, Tensor) for a in args):
        raise TypeError("example_inputs: expected tensors (or a dict of tensors) as the model's inputs")
    return args, None, [f"input_{i}" for i in range(len(args))]


def _auto_axes(names: List[str], tensors: List[Tensor]) -> Dict[str, Dict[int, str]]:
    """Dynamic axes: every dim of integer inputs (token ids, masks: batch and sequence), the first of float ones."""
    axes: Dict[str, Dict[int, str]] = {}
    for name, t in zip(names, tensors):
        if t.dim() == 0:
            continue
        dims = range(t.dim()) if not t.is_floating_point() else range(1)
        axes[name] = {d: ("batch" if d == 0 else f"dim_{d}") for d in dims}
    return axes


def _sparsify_initializers(model_proto: Any, sparse: Union[str, bool]) -> int:
    """Moves float initializers with zeros into ``sparse_initializer`` (COO) where that is smaller (``"auto"``) or
    whenever they hold a zero (``True``); returns how many moved."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model_proto.graph
    moved = 0
    keep = []
    for init in graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype.kind != "f" or arr.ndim < 2:
            keep.append(init)
            continue
        nz = np.flatnonzero(arr)
        dense_bytes = arr.size * arr.itemsize
        coo_bytes = nz.size * (arr.itemsize + 8)
        if (sparse is True and nz.size < arr.size) or (sparse == "auto" and coo_bytes < dense_bytes):
            values = numpy_helper.from_array(arr.reshape(-1)[nz], init.name)
            indices = numpy_helper.from_array(nz.astype(np.int64), init.name + "_indices")
            graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, list(arr.shape)))
            moved += 1
        else:
            keep.append(init)
    if moved:
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return moved


def onnx(model: nn.Module, path: Union[str, os.PathLike], example_inputs: Any, *, opset: int = 17,
         input_names: Optional[Sequence[str]] = None, output_names: Optional[Sequence[str]] = None,
         dynamic_axes: Union[str, Dict[str, Any], None] = "auto", sparse: Union[str, bool] = "auto") -> str:
    """Writes ``model`` (fastdistill layers included, see the module docstring) as an ONNX file at ``path`` and
    returns the path.

    Args:
        example_inputs: one batch the model is traced on: a tensor, a tuple of positional arguments, or a dict of
            keyword arguments (a tokenizer's output); an iterable of batches uses the first.
        opset: ONNX opset (>= 13, for per-channel DequantizeLinear).
        dynamic_axes: ``"auto"`` (every dim of integer inputs such as token ids, the batch dim of float inputs),
            None (static shapes), or ``torch.onnx.export``'s dict.
        sparse: how pruned weights are stored (see the module docstring).

    Example::

        >>> q = fastdistill.compress.quantize(model)
        >>> fastdistill.export.onnx(q, "model.onnx", torch.randn(1, 64))  # doctest: +SKIP
        'model.onnx'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 13:
        raise ValueError(f"opset: expected an int >= 13, got {opset!r}")
    if sparse not in SPARSE_CHOICES:
        raise ValueError(f"sparse: expected one of {SPARSE_CHOICES}, got {sparse!r}")
    if example_inputs is None:
        raise ValueError("example_inputs: required (the model is traced on them)")
    try:
        import onnx as onnx_pkg
    except ImportError:
        raise ImportError("fastdistill.export.onnx needs the onnx package: pip install onnx") from None
    args, keys, names = _arguments(batches_of(example_inputs)[0])
    names = list(input_names) if input_names is not None else names
    axes = _auto_axes(names, list(args)) if dynamic_axes == "auto" else dynamic_axes
    m = _Positional(_for_export(model), keys)
    path = os.fspath(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        m(*args)  # names a dict output's entries
        outputs = list(output_names) if output_names is not None else m.output_keys
        torch.onnx.export(m, args, path, dynamo=False, opset_version=opset, input_names=names,
                          output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
    proto = onnx_pkg.load(path)
    if _sparsify_initializers(proto, sparse):
        onnx_pkg.save(proto, path)
    onnx_pkg.checker.check_model(path)
    return path
