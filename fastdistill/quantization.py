"""Integer quantization: :func:`quantize` -> :class:`QuantizedTensor` (plain int codes + fp32 scales), :func:`dequantize`,
and :func:`fake_quantize` (quantize-dequantize with a straight-through gradient).

Exact semantics, shared by every backend (native and Numba codes are bit-identical to the pure-torch reference):

* **Rows.** ``x`` is viewed as rows that each get one scale and one zero point:
  ``granularity="tensor"``: one row holding all of ``x`` (flattened, C order);
  ``"channel"``: one row per index along ``axis`` (``x.movedim(axis, 0).reshape(C, -1)``);
  ``"group"``: each channel row split into consecutive groups of ``group_size`` elements, one row per group
  (for a ``(out, in)`` Linear weight and ``axis=0``: groups along ``in``, scales ``(out, in // group_size)``).
  ``group_size`` must divide the channel row length (no padding). ``scale`` and ``zero_point`` are 1-D, one entry
  per row, row-major (channel, then group).
* **Arithmetic** is float32 (fp16/bf16/fp64 inputs are converted first). Rounding is round-half-to-even
  (``torch.round``) of the true fp32 quotient ``x / scale``.
* **symmetric** (default): ``qmax = 2**(bits-1) - 1``; ``scale = clip / qmax``; ``code = clamp(round(x / scale),
  -qmax, qmax)`` - the range is symmetric (int8: [-127, 127]) so that ``-x`` quantizes to ``-code``;
  ``zero_point = 0``.
* **asymmetric**: the clip range ``[lo, hi]`` is widened to include 0 (so 0.0 is exact); ``qmax = 2**bits - 1``;
  ``scale = (hi - lo) / qmax``; ``zero_point = clamp(round(-lo / scale), 0, qmax)``;
  ``code = clamp(round(x / scale) + zero_point, 0, qmax)`` (unsigned, 8-bit codes are uint8).
* Linear dequantization is ``(code - zero_point) * scale`` in fp32 (one rounding), then cast to the input dtype.
* **log2**: sign + power-of-two exponent. ``scale`` = the clip value, ``qmax = 2**(bits-1) - 1``;
  ``m = round(log2(|x| / scale)) + qmax`` clamped to at most ``qmax``, and ``m <= 0`` (or ``x == 0``) gives code 0;
  ``code = sign(x) * m``; value ``sign(code) * scale * 2**(|code| - qmax)``.
* **bits=1** (binary): ``code = +1 if x >= 0 else -1``, ``scale = mean(|x|)`` per row (symmetric scheme only;
  ``scale_method`` is ``"mean"``).
* **All-zero rows** (and empty rows, or a range so small that ``clip / qmax`` underflows to 0) get ``scale = 1``,
  so nothing divides by zero; such a row's codes are 0 (its zero point) and dequantize to 0.
* **Scale methods** pick the clip value per row: ``"absmax"``: ``max|x|`` (asymmetric: ``min x``, ``max x``);
  ``"mean"``: ``absmax`` limited to ``2**(bits-1) * mean|x|``; ``"percentile"``: the nearest-rank ``percentile``
  of ``|x|`` (asymmetric: of ``x`` at ``p`` and ``100 - p``); ``"mse"``: the ratio ``r`` in
  ``1.0, 0.95, ..., 0.05`` of the absmax range whose quantize-dequantize has the smallest squared error
  (ties: larger ``r``); ``"fisher"``: as ``"mse"`` with each element's squared error weighted by ``fisher`` (x's
  shape: e.g. squared loss gradients summed over calibration batches, the diagonal Fisher information), so the
  clip favours the weights the loss is sensitive to. Values beyond the clip saturate to the extreme code.
* **NaN or infinite** input raises ``ValueError``, and so does an asymmetric range whose width ``hi - lo``
  overflows float32.
* **Storage.** ``codes`` is 2-D ``(rows, row_bytes)``: int8 for 8-bit symmetric/log2, uint8 for 8-bit asymmetric;
  for 4, 2, 1 bits, uint8 with 2, 4, 8 codes per byte as unsigned fields ``code + 2**(bits-1)`` (asymmetric: the
  code itself; 1 bit: 1 for +1, 0 for -1), the earlier element in the lower bits, each row's last byte padded
  with zero fields.

Native C++ kernels serve fp32 input with the absmax method, symmetric or asymmetric, 8/4/2 bits (one fused pass per
row: reduce, scale, round, clamp, pack); the Numba backend mirrors them; every other case runs on the reference.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from . import _ops
from ._convert import ArrayLike, check_float, check_int, normalize_dim, to_tensor
from .formats.codes import code_dtype, row_bytes, unpack

SCHEMES = ("symmetric", "asymmetric", "log2")
GRANULARITIES = ("tensor", "channel", "group")
SCALE_METHODS = ("absmax", "mean", "percentile", "mse", "fisher")
BITS = (8, 4, 2, 1)
_DTYPES = {str(d).replace("torch.", ""): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64)}


class QuantizedTensor:
    """Integer codes plus the scales to recover a float tensor (see the module docstring for the exact layout).

    Attributes: ``codes`` (2-D int8/uint8, packed below 8 bits), ``scale`` (1-D float32, one per row),
    ``zero_point`` (1-D int32), ``bits``, ``scheme``, ``granularity``, ``axis``, ``group_size`` (0 unless
    ``granularity == "group"``), ``shape`` (original shape) and ``dtype`` (original float dtype).

    Example::

        >>> q = fastdistill.quantize(torch.randn(64, 256), bits=4, granularity="group", group_size=128)
        >>> q.codes.shape, q.scale.shape, q.dequantize().shape
        (torch.Size([128, 64]), torch.Size([128]), torch.Size([64, 256]))
    """

    __slots__ = ("codes", "scale", "zero_point", "bits", "scheme", "granularity", "axis", "group_size", "shape",
                 "dtype")

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, *, bits: int,
                 scheme: str, granularity: str, axis: int, group_size: int, shape: Tuple[int, ...],
                 dtype: torch.dtype) -> None:
        """Wraps existing codes and scales, validated: every field must fit the others (the kernels read
        ``rows x row_bytes`` codes and ``rows`` scales and zero points, with ``rows`` following from ``shape``,
        ``granularity``, ``axis`` and ``group_size``), else ValueError/TypeError naming the field."""
        self._set(codes, scale, zero_point, bits, scheme, granularity, axis, group_size, shape, dtype)
        self._check_consistent()

    def _set(self, codes, scale, zero_point, bits, scheme, granularity, axis, group_size, shape, dtype) -> None:
        self.codes, self.scale, self.zero_point = codes, scale, zero_point
        self.bits, self.scheme, self.granularity = bits, scheme, granularity
        self.axis, self.group_size = axis, group_size
        self.shape, self.dtype = shape, dtype

    @classmethod
    def _trusted(cls, codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, **meta: Any
                 ) -> "QuantizedTensor":
        """Wraps what :func:`quantize` (or a QuantizedTensor already validated) made, without the checks."""
        obj = cls.__new__(cls)
        meta["shape"] = torch.Size(meta["shape"])
        obj._set(codes, scale, zero_point, **meta)
        return obj

    @property
    def row_length(self) -> int:
        """Elements per row (per scale)."""
        if self.granularity == "group":
            return self.group_size
        if self.granularity == "channel":
            return math.prod(self.shape[:self.axis] + self.shape[self.axis + 1:])
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes held by codes, scales and zero points."""
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale, self.zero_point))

    def int_codes(self) -> torch.Tensor:
        """The unpacked integer codes, ``(rows, row_length)`` int32."""
        return unpack(self.codes, self.row_length, self.bits, self.scheme)

    def dequantize(self, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The float tensor the codes stand for, in the original shape and dtype. With ``out`` (a tensor of that
        shape and dtype on the codes' device), the values are written there and ``out`` is returned: a reused
        buffer saves the page faults of fresh output memory, which cost more than dequantizing itself."""
        if out is not None:
            return self._dequantize_into(out)
        rows = _ops.call("dequantize", self.codes, self.scale, self.zero_point, self.bits, self.scheme,
                         self.row_length)
        return _from_rows(rows, self.shape, self.granularity, self.axis).to(self.dtype)

    def _dequantize_into(self, out: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"out: expected a torch.Tensor, got {type(out).__name__}")
        if out.shape != self.shape or out.dtype != self.dtype or out.device != self.codes.device:
            raise ValueError(f"out: expected shape {tuple(self.shape)}, dtype {self.dtype} on {self.codes.device}, "
                             f"got {tuple(out.shape)}, {out.dtype} on {out.device}")
        direct = (out.dtype == torch.float32 and out.is_contiguous()
                  and (self.granularity == "tensor" or self.axis == 0))
        if not direct:  # the rows are not out's memory order: go through a fresh tensor
            return out.copy_(self.dequantize())
        rows = out.view(-1, self.row_length) if self.row_length else out.view(self.scale.numel(), 0)
        with torch.no_grad():
            _ops.call("dequantize_into", self.codes, self.scale, self.zero_point, self.bits, self.scheme, rows)
        return out

    def to(self, device: Any) -> "QuantizedTensor":
        """A copy with every tensor on ``device``."""
        return QuantizedTensor._trusted(self.codes.to(device), self.scale.to(device), self.zero_point.to(device),
                                        **self._meta())

    def _meta(self) -> Dict[str, Any]:
        return dict(bits=self.bits, scheme=self.scheme, granularity=self.granularity, axis=self.axis,
                    group_size=self.group_size, shape=tuple(self.shape), dtype=self.dtype)

    def state_dict(self) -> Dict[str, Any]:
        """Tensors and plain values only, so ``torch.save`` / ``torch.load(weights_only=True)`` round-trip it."""
        meta = self._meta()
        meta["shape"] = list(meta["shape"])
        meta["dtype"] = str(self.dtype).replace("torch.", "")
        return {"codes": self.codes, "scale": self.scale, "zero_point": self.zero_point, **meta}

    @classmethod
    def from_state_dict(cls, state: Dict[str, Any]) -> "QuantizedTensor":
        """Inverse of :meth:`state_dict` (validated as the constructor validates: a loaded state is untrusted)."""
        missing = {"codes", "scale", "zero_point", "bits", "scheme", "granularity", "axis", "group_size", "shape",
                   "dtype"} - set(state)
        if missing:
            raise ValueError(f"state: missing {sorted(missing)}")
        if not isinstance(state["dtype"], str) or state["dtype"] not in _DTYPES:
            raise ValueError(f"state: dtype must be one of {tuple(_DTYPES)}, got {state['dtype']!r}")
        meta = {k: state[k] for k in ("bits", "scheme", "granularity", "axis", "group_size", "shape")}
        return cls(state["codes"], state["scale"], state["zero_point"], dtype=_DTYPES[state["dtype"]], **meta)

    def _check_consistent(self) -> None:
        """Normalises the plain fields (numpy ints -> int, shape -> torch.Size); TypeError/ValueError naming the
        field unless the codes, scales and metadata fit together."""
        self.bits = check_int(self.bits, "bits")
        _check_choice(self.bits, BITS, "bits")
        _check_choice(self.scheme, SCHEMES, "scheme")
        _check_choice(self.granularity, GRANULARITIES, "granularity")
        if self.dtype not in _DTYPES.values():
            raise TypeError(f"dtype: expected one of {tuple(_DTYPES.values())}, got {self.dtype!r}")
        if isinstance(self.shape, (str, bytes)) or not isinstance(self.shape, (tuple, list, torch.Size)):
            raise TypeError(f"shape: expected a tuple of ints, got {type(self.shape).__name__}")
        shape = tuple(check_int(n, "shape") for n in self.shape)
        if any(n < 0 for n in shape):
            raise ValueError(f"shape: expected non-negative sizes, got {shape}")
        self.shape = torch.Size(shape)
        self.axis = check_int(self.axis, "axis")
        self.group_size = check_int(self.group_size, "group_size")
        if self.granularity == "tensor":
            rows = 1
        else:
            if not 0 <= self.axis < len(shape):
                raise ValueError(f"axis: expected a dimension of shape {shape} in [0, {len(shape)}), got {self.axis}")
            channel_length = math.prod(shape[:self.axis] + shape[self.axis + 1:])
            rows = shape[self.axis]
            if self.granularity == "group":
                if self.group_size <= 0 or channel_length % self.group_size:
                    raise ValueError(f"group_size: {self.group_size} does not divide the channel row length "
                                     f"{channel_length}")
                rows *= channel_length // self.group_size
        want = ((code_dtype(self.bits, self.scheme), (rows, row_bytes(self.row_length, self.bits))),
                (torch.float32, (rows,)), (torch.int32, (rows,)))
        for name, (dtype, want_shape) in zip(("codes", "scale", "zero_point"), want):
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
            if t.dtype != dtype or tuple(t.shape) != want_shape:
                raise ValueError(f"{name}: expected {dtype} of shape {want_shape} (for shape={shape}, "
                                 f"granularity={self.granularity!r}, bits={self.bits}), got {t.dtype} "
                                 f"{tuple(t.shape)}")
        if len({t.device for t in (self.codes, self.scale, self.zero_point)}) > 1:
            raise ValueError("codes, scale, zero_point: expected tensors on one device")

    def __repr__(self) -> str:
        return (f"QuantizedTensor(shape={tuple(self.shape)}, dtype={self.dtype}, bits={self.bits}, "
                f"scheme={self.scheme!r}, granularity={self.granularity!r}, axis={self.axis}, "
                f"group_size={self.group_size}, rows={self.scale.numel()}, nbytes={self.nbytes})")


def _rows(t: torch.Tensor, granularity: str, axis: int, group_size: int) -> torch.Tensor:
    if granularity == "tensor":
        return t.reshape(1, -1)
    length = math.prod(t.shape[:axis] + t.shape[axis + 1:])  # not -1: ambiguous when the axis has length 0
    moved = t.movedim(axis, 0).reshape(t.shape[axis], length)
    return moved if granularity == "channel" else moved.reshape(-1, group_size)


def _from_rows(rows: torch.Tensor, shape: torch.Size, granularity: str, axis: int) -> torch.Tensor:
    if granularity == "tensor":
        return rows.reshape(shape)
    moved_shape = (shape[axis],) + tuple(s for i, s in enumerate(shape) if i != axis)
    return rows.reshape(moved_shape).movedim(0, axis).contiguous()


def _check_choice(value: Any, choices: Tuple[Any, ...], name: str) -> None:
    if value not in choices or isinstance(value, bool):
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


def _check_args(t: torch.Tensor, bits: int, scheme: str, granularity: str, axis: int, group_size: int,
                scale_method: Optional[str], percentile: float) -> Tuple[int, str, int, int]:
    """Validated (bits, scale_method, axis, group_size)."""
    check_float(t)
    bits = check_int(bits, "bits")
    _check_choice(bits, BITS, "bits")
    _check_choice(scheme, SCHEMES, "scheme")
    _check_choice(granularity, GRANULARITIES, "granularity")
    if scale_method is None:
        scale_method = "mean" if bits == 1 else "absmax"
    _check_choice(scale_method, SCALE_METHODS, "scale_method")
    if bits == 1 and (scheme != "symmetric" or scale_method != "mean"):
        raise ValueError("bits: 1-bit quantization is sign * mean|x|: it needs scheme='symmetric' and "
                         f"scale_method='mean' (or None), got {scheme!r} and {scale_method!r}")
    if isinstance(percentile, bool) or not isinstance(percentile, numbers.Real) or not 0 < percentile <= 100:
        raise ValueError(f"percentile: expected a number in (0, 100], got {percentile!r}")
    if granularity == "tensor":
        return bits, scale_method, 0, 0
    if t.dim() == 0:
        raise ValueError(f"x: granularity={granularity!r} needs at least one dimension, got a 0-d tensor")
    axis = normalize_dim(axis, t.dim(), "axis")
    if granularity == "channel":
        return bits, scale_method, axis, 0
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral) or group_size < 1:
        raise ValueError(f"group_size: expected a positive int, got {group_size!r}")
    length = t.numel() // t.shape[axis] if t.shape[axis] else 0
    if length % group_size:
        raise ValueError(f"group_size: {group_size} does not divide the channel row length {length} "
                         f"(x.numel() / x.shape[{axis}]); no padding is applied")
    return bits, scale_method, axis, int(group_size)


def quantize(x: ArrayLike, bits: int = 8, *, scheme: str = "symmetric", granularity: str = "tensor", axis: int = 0,
             group_size: int = 128, scale_method: Optional[str] = None, percentile: float = 99.99,
             fisher: Optional[ArrayLike] = None) -> QuantizedTensor:
    """Quantize a float tensor (or numpy array) to ``bits``-bit integer codes with fp32 scales.

    ``scheme``: ``"symmetric"`` | ``"asymmetric"`` | ``"log2"``; ``granularity``: ``"tensor"`` | ``"channel"``
    (one scale per index along ``axis``) | ``"group"`` (channels split into groups of ``group_size``);
    ``scale_method``: ``"absmax"`` (default; ``"mean"`` for ``bits=1``) | ``"mean"`` | ``"percentile"`` |
    ``"mse"`` | ``"fisher"`` (with ``fisher``: per-element importance weights of x's shape). Exact rules in the
    module docstring. The result's tensors are on x's device (numpy input: CPU tensors).

    Example::

        >>> w = torch.randn(4096, 4096)
        >>> q = fastdistill.quantize(w, 8, granularity="channel")      # int8 codes, one scale per row
        >>> (q.dequantize() - w).abs().max() <= q.scale.max() / 2
        tensor(True)
    """
    t = to_tensor(x)
    bits, scale_method, axis, group_size = _check_args(t, bits, scheme, granularity, axis, group_size, scale_method,
                                                       percentile)
    rows = _rows(t.detach().float(), granularity, axis, group_size)
    if scale_method == "fisher":
        codes, scale, zp = _ops.call("quantize_weighted", rows, _fisher_rows(fisher, t, granularity, axis, group_size),
                                     bits, scheme)
    else:
        codes, scale, zp = _ops.call("quantize", rows, bits, scheme, scale_method, float(percentile))
    return QuantizedTensor._trusted(codes, scale, zp, bits=bits, scheme=scheme, granularity=granularity, axis=axis,
                                    group_size=group_size, shape=tuple(t.shape), dtype=t.dtype)


def _fisher_rows(fisher: Optional[ArrayLike], t: torch.Tensor, granularity: str, axis: int,
                 group_size: int) -> torch.Tensor:
    """The ``fisher`` weights of ``scale_method="fisher"``, checked, as rows like x's."""
    if fisher is None:
        raise ValueError("fisher: scale_method='fisher' needs the per-element weights (x's shape)")
    f = to_tensor(fisher, "fisher")
    check_float(f, "fisher")
    if f.shape != t.shape or f.device != t.device:
        raise ValueError(f"fisher: expected shape {tuple(t.shape)} on {t.device}, got {tuple(f.shape)} on {f.device}")
    f = f.detach().float()
    if not bool(torch.isfinite(f).all()) or bool((f < 0).any()):
        raise ValueError("fisher: expected finite, non-negative weights")
    return _rows(f, granularity, axis, group_size)


def dequantize(q: QuantizedTensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``q.dequantize(out)``: the float tensor in its original shape and dtype (written into ``out`` if given).

    Example::

        >>> q = fastdistill.quantize(torch.tensor([0.5, -1.0, 0.25]), 8)
        >>> fastdistill.dequantize(q)
        tensor([ 0.5039, -1.0000,  0.2520])
    """
    if not isinstance(q, QuantizedTensor):
        raise TypeError(f"q: expected a QuantizedTensor, got {type(q).__name__}")
    return q.dequantize(out)


class _FakeQuantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, kwargs: Dict[str, Any]) -> torch.Tensor:  # type: ignore[override]
        return quantize(x, **kwargs).dequantize()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


def fake_quantize(x: ArrayLike, bits: int = 8, *, scheme: str = "symmetric", granularity: str = "tensor",
                  axis: int = 0, group_size: int = 128, scale_method: Optional[str] = None,
                  percentile: float = 99.99) -> ArrayLike:
    """``quantize(x, ...).dequantize()`` with a straight-through gradient (d out / d x = identity, also for clipped
    values), for quantization-aware training and distilling into a quantized student. Same arguments as
    :func:`quantize`; numpy in, numpy out.

    Example::

        >>> w = torch.randn(8, 16, requires_grad=True)
        >>> fastdistill.fake_quantize(w, 4, granularity="channel").sum().backward()
        >>> bool((w.grad == 1).all())
        True
    """
    kwargs = dict(bits=bits, scheme=scheme, granularity=granularity, axis=axis, group_size=group_size,
                  scale_method=scale_method, percentile=percentile)
    if isinstance(x, np.ndarray):
        return quantize(x, **kwargs).dequantize().numpy()
    t = to_tensor(x)
    _check_args(t, bits, scheme, granularity, axis, group_size, scale_method, percentile)
    return _FakeQuantize.apply(t, kwargs)
