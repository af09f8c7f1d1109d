"""Compact, safe model files: ``save`` / ``load`` / ``model_size``.

File layout (readable by ``safetensors``; nothing in it is ever executed, there is no pickle):

* 8 bytes: little-endian uint64 ``N``, the header length;
* ``N`` bytes: a JSON object, space-padded to a multiple of 8 bytes. Each key names a stored tensor and maps to
  ``{"dtype": "F32" | "BF16" | "I16" | ..., "shape": [...], "data_offsets": [begin, end]}`` (byte offsets into the
  data section, tensors back to back in key order, no gaps). ``"__metadata__"`` maps strings to strings:
  ``format`` = ``"fastdistill"``, ``version``, ``sha256`` (hex digest of the data section), ``encodings`` and
  ``modules`` (both JSON, below);
* the data section: raw little-endian tensor bytes.

``encodings`` maps a *logical* entry (a state-dict key, or the module name of a SparseLinear) to how it is stored
when that is not as one plain tensor: ``{"kind": "csr" | "bitmask" | "bits" | "quantized", "shape": [...], "as":
"dense" | "sparse_linear" | "sparse_weight" | "quantized_tensor"}``. Its component tensors are stored as
``<name>::<component>``:

* ``bits`` (bool tensors such as pruning masks): ``mask``, one bit per element as below;
* ``csr``: ``indptr`` (int64), ``indices`` (int16 = unsigned 16-bit when cols <= 65536, else int32), ``values``;
* ``bitmask``: ``mask`` (uint8, one bit per element in row-major order, most significant bit first; the
  ``np.packbits`` order) and ``values`` (the nonzeros in row-major order);
* ``csr`` and ``bitmask`` of a SparseWeight with int8 values (codes) add ``scale`` (float32, one per row);
* ``quantized`` (a :class:`~fastdistill.QuantizedTensor`): ``codes``, ``scale``, ``zero_point`` as the object holds
  them (packed 4/2/1-bit codes stay packed), its other fields in the entry's ``"meta"``.

Of ``csr`` and ``bitmask`` the smaller is written: a bitmask costs 1 bit per element, CSR 2-4 bytes per nonzero, so
the bitmask wins at up to about 94% sparsity. Pruned dense weights (float, or integer codes such as a pruned
Int8Linear's) are written this way too when that saves at least 10% (and they hold no -0.0, which would not
survive), SparseLinear layers (``as: sparse_linear``) always.

``modules`` maps module names to the fastdistill module types (``"SparseLinear"``, ``"Int8Linear"``) that ``load``
must put in place of a plain model's layers; ``load`` also resizes Linear, Conv, norm and Embedding layers whose
stored shapes differ and shortens layer stacks (after ``prune_neurons``, ``prune_heads``, ``drop_layers``).

Safety. ``save`` writes a temporary file in the target directory, flushes and fsyncs it, then renames it over
``path`` (``os.replace``): a failure midway (a full disk, an exception, a killed process) leaves the old file intact
and no partial file. ``load`` treats the file as untrusted: every header is parsed with a nesting limit and checked
field by field; every tensor's declared size must match its bytes in the file; a file of a newer or unknown format
version is refused with both versions named; and the bytes the entries decode to (a CSR-stored dense tensor holds
its zeros only in its shape) are counted before anything is allocated, and refused beyond ``max_bytes``
(default: 64 times the file's size, at least 256 MiB). Any malformed, truncated or modified file raises ValueError.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import sys
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from .._files import atomic_write
from ..formats.csr import check_components, columns
from ..nn import Int4Linear, Int8Conv2d, Int8Linear, QuantizedEmbedding, SparseLinear
from ..quantization import QuantizedTensor
from ..sparse import SparseWeight
from .prune import restore_masks
from .structure import fit_to_state

FORMAT, VERSION = "fastdistill", "1"
_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}
_FROM_NAME = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 << 20
_MAX_JSON_DEPTH = 32  # the format nests 4 deep; the limit keeps json's recursion far from Python's
_OPEN, _CLOSE = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)
_MAX_DIM = 1 << 62  # a declared size beyond any real tensor (and beyond int64 once multiplied)
_KINDS = ("csr", "bitmask", "bits", "quantized")
_TARGETS = ("dense", "sparse_linear", "sparse_weight", "quantized_tensor")
_SPARSE_SAVING = 0.9  # a dense tensor is stored sparse only when that takes at most 90% of its dense bytes
Entry = Union[torch.Tensor, SparseWeight, QuantizedTensor]
_MODULES = (SparseLinear, Int8Linear, Int4Linear, Int8Conv2d, QuantizedEmbedding)  # what load() puts in place
_SHAPED_BY_STATE = {cls.__name__: cls for cls in (Int4Linear, Int8Conv2d, QuantizedEmbedding)}  # .for_state()


# ------------------------------------------------------------------------------------------------ encoding


def _csr_of_mask(keep: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(indptr, indices) of the True entries of a (rows, cols) bool mask, in SparseWeight's index dtypes."""
    indptr = torch.zeros(keep.shape[0] + 1, dtype=torch.int64)
    torch.cumsum(keep.sum(dim=1), dim=0, out=indptr[1:])
    col = keep.nonzero()[:, 1].to(torch.int32)
    return indptr, (col.to(torch.int16) if keep.shape[1] <= 65536 else col)


def _sparse_parts(rows: int, cols: int, values: torch.Tensor, keep: Optional[torch.Tensor] = None,
                  indptr: Optional[torch.Tensor] = None, indices: Optional[torch.Tensor] = None
                  ) -> Tuple[str, Dict[str, torch.Tensor]]:
    """The smaller of the bitmask and CSR encodings of a (rows, cols) matrix whose stored entries are ``values``,
    given either as a mask ``keep`` or as CSR ``indptr`` / ``indices``."""
    nnz, vbytes = values.numel(), values.element_size()
    csr_bytes = (rows + 1) * 8 + nnz * ((2 if cols <= 65536 else 4) + vbytes)
    mask_bytes = math.ceil(rows * cols / 8) + nnz * vbytes
    if mask_bytes <= csr_bytes:
        if keep is None:
            keep = torch.zeros(rows, cols, dtype=torch.bool)
            keep[torch.repeat_interleave(torch.arange(rows), indptr.diff()), columns(indices)] = True
        return "bitmask", {"mask": torch.from_numpy(np.packbits(keep.reshape(-1).numpy())), "values": values}
    if indptr is None:
        indptr, indices = _csr_of_mask(keep)
    return "csr", {"indptr": indptr, "indices": indices, "values": values}


def _sparse_if_smaller(t: torch.Tensor) -> Optional[Tuple[str, Dict[str, torch.Tensor]]]:
    if t.dtype == torch.bool or t.is_complex() or t.dim() < 2 or t.numel() == 0:
        return None
    flat = t.detach().reshape(t.shape[0], -1)
    keep = flat != 0
    if t.is_floating_point() and bool((~keep & torch.signbit(flat)).any()):  # -0.0 would come back as +0.0
        return None
    nnz = int(keep.sum())
    rows, cols = flat.shape
    smallest = min(math.ceil(flat.numel() / 8), (rows + 1) * 8 + nnz * (2 if cols <= 65536 else 4)) \
        + nnz * flat.element_size()
    if smallest > _SPARSE_SAVING * flat.numel() * flat.element_size():
        return None
    return _sparse_parts(rows, cols, flat[keep], keep=keep)


def _encode(state: Mapping[str, Entry], sparse_linear: Mapping[str, int]) -> Tuple[Dict[str, torch.Tensor], Dict]:
    """(stored tensors, encodings) of a state dict (SparseWeight values allowed); ``sparse_linear`` maps the names
    of SparseLinear modules, whose CSR buffers are stored as one sparse entry, to their in_features."""
    tensors: Dict[str, torch.Tensor] = {}
    encodings: Dict[str, Dict] = {}
    state = dict(state)
    grouped: Dict[str, SparseWeight] = {}
    for mod, cols in sparse_linear.items():
        prefix = f"{mod}." if mod else ""
        indptr, indices, values = (state.pop(prefix + k) for k in ("indptr", "indices", "values"))
        grouped[mod] = SparseWeight._trusted(indptr, indices, values, (indptr.numel() - 1, cols),
                                             state.pop(prefix + "scale", None))
    items = [(name, value, "sparse_weight" if isinstance(value, SparseWeight) else "dense")
             for name, value in state.items()] + [(name, w, "sparse_linear") for name, w in grouped.items()]
    for name, value, as_ in items:
        if isinstance(value, QuantizedTensor):
            meta = value.state_dict()
            comps = {k: meta.pop(k) for k in ("codes", "scale", "zero_point")}
            encodings[name] = {"kind": "quantized", "shape": meta.pop("shape"), "as": "quantized_tensor",
                               "meta": meta}
            tensors.update({f"{name}::{comp}": t.detach().cpu() for comp, t in comps.items()})
            continue
        if isinstance(value, SparseWeight):
            w = value.to("cpu")
            kind, comps = _sparse_parts(*w.shape, w.values, indptr=w.indptr, indices=w.indices)
            if w.scale is not None:
                comps["scale"] = w.scale
            shape = list(w.shape)
        elif isinstance(value, torch.Tensor) and value.dtype == torch.bool and value.numel() >= 64:
            kind, shape = "bits", list(value.shape)
            comps = {"mask": torch.from_numpy(np.packbits(value.detach().cpu().reshape(-1).numpy()))}
        elif isinstance(value, torch.Tensor):
            enc = _sparse_if_smaller(value.detach().cpu())
            if enc is None:
                tensors[name] = value.detach().cpu()
                continue
            (kind, comps), shape = enc, list(value.shape)
        else:
            raise TypeError(f"model: entry {name!r} is a {type(value).__name__}, expected a tensor, SparseWeight "
                            "or QuantizedTensor")
        encodings[name] = {"kind": kind, "shape": shape, "as": as_}
        tensors.update({f"{name}::{comp}": t.detach().cpu() for comp, t in comps.items()})
    return tensors, encodings


def _decode_entry(name: str, enc: Dict, tensors: Dict[str, torch.Tensor]) -> Dict[str, Entry]:
    """The state-dict entries of one stored sparse entry, validated."""
    try:
        kind, as_, shape = enc["kind"], enc["as"], [int(s) for s in enc["shape"]]
        if kind == "quantized":
            comps = {k: tensors.pop(f"{name}::{k}") for k in ("codes", "scale", "zero_point")}
            return {name: QuantizedTensor.from_state_dict({**comps, **enc["meta"], "shape": shape})}
        if kind == "bits":
            bits = tensors.pop(f"{name}::mask")
            if bits.dtype != torch.uint8 or bits.numel() != math.ceil(math.prod(shape) / 8):
                raise ValueError("bit count does not match the shape")
            return {name: torch.from_numpy(np.unpackbits(bits.numpy(), count=math.prod(shape)).astype(bool))
                    .reshape(shape)}
        rows, cols = shape[0], math.prod(shape[1:])
        values = tensors.pop(f"{name}::values")
        scale = tensors.pop(f"{name}::scale", None)
        if kind == "bitmask":
            bits = tensors.pop(f"{name}::mask")
            if bits.dtype != torch.uint8 or bits.numel() != math.ceil(rows * cols / 8):
                raise ValueError("mask size does not match the shape")
            keep = torch.from_numpy(np.unpackbits(bits.numpy(), count=rows * cols).astype(bool)).reshape(rows, cols)
            indptr, indices = _csr_of_mask(keep)
        elif kind == "csr":
            indptr, indices = tensors.pop(f"{name}::indptr"), tensors.pop(f"{name}::indices")
        else:
            raise ValueError(f"unknown encoding kind {kind!r}")
        if as_ == "dense":
            if scale is not None:
                raise ValueError("a dense entry has a scale")
            if indptr.dtype != torch.int64 or indices.dtype not in (torch.int16, torch.int32) \
                    or indptr.numel() != rows + 1:
                raise ValueError("CSR components have wrong dtypes or sizes")
            cidx = columns(indices)
            check_components(indptr, cidx, values, cols)
            dense = torch.zeros(rows, cols, dtype=values.dtype)
            dense[torch.repeat_interleave(torch.arange(rows), indptr.diff()), cidx] = values
            return {name: dense.reshape(shape)}
        w = SparseWeight(indptr, indices, values, (rows, cols), scale)
        if as_ == "sparse_weight":
            return {name: w}
        if as_ == "sparse_linear":
            prefix = f"{name}." if name else ""
            buffers = {prefix + "indptr": w.indptr, prefix + "indices": w.indices, prefix + "values": w.values}
            return buffers if scale is None else {**buffers, prefix + "scale": w.scale}
        raise ValueError(f"unknown target {as_!r}")
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError, OverflowError, AttributeError) as exc:
        raise ValueError(f"file: entry {name!r} is malformed ({type(exc).__name__}: {exc})") from None


def _check_shape(shape: Any, what: str) -> List[int]:
    """A declared shape: a list of JSON ints in [0, 2**62] (no bool, float, Infinity), else ValueError."""
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d <= _MAX_DIM for d in shape):
        raise ValueError(f"{what}: shape {shape!r} is not a list of sizes in [0, 2**62]")
    return shape


def _decoded_bytes(encodings: Dict, tensors: Dict[str, torch.Tensor]) -> int:
    """Bytes the stored tensors become once decoded, from the header alone (nothing allocated); checks the
    encodings' structure. Dense entries stored sparse (csr, bitmask) and bit-packed masks expand to their shape."""
    if not isinstance(encodings, dict):
        raise ValueError("file: corrupt metadata (encodings is not a JSON object)")
    total = sum(t.numel() * t.element_size() for name, t in tensors.items() if "::" not in name)
    for name, enc in encodings.items():
        what = f"file: entry {name!r}"
        if not isinstance(enc, dict) or enc.get("kind") not in _KINDS or enc.get("as") not in _TARGETS:
            raise ValueError(f"{what} has a malformed encoding {enc!r}")
        numel = math.prod(_check_shape(enc.get("shape"), what))
        parts = [t for key, t in tensors.items() if key.startswith(f"{name}::")]
        stored = sum(t.numel() * t.element_size() for t in parts)
        values = tensors.get(f"{name}::values")
        if enc["kind"] == "bits":
            total += numel
        elif enc["as"] == "dense" and values is not None:
            total += numel * values.element_size()
        else:  # the same components (a bitmask is first unpacked to one bool per element)
            total += stored + (numel if enc["kind"] == "bitmask" else 0)
    return total


def _decode(tensors: Dict[str, torch.Tensor], encodings: Dict) -> Dict[str, Entry]:
    state: Dict[str, Entry] = {}
    for name, enc in encodings.items():
        state.update(_decode_entry(name, enc, tensors))
    leftover = [k for k in tensors if "::" in k]
    if leftover:
        raise ValueError(f"file: component tensors without an encoding entry: {leftover[:5]}")
    state.update(tensors)
    return state


# ------------------------------------------------------------------------------------------------ file format


def _write(path: Union[str, os.PathLike], tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> None:
    header: Dict[str, object] = {}
    blobs: List[bytes] = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        if t.dtype not in _DTYPES:
            raise TypeError(f"model: tensor {name!r} has dtype {t.dtype}, which the file format does not store")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    data = b"".join(blobs)
    header["__metadata__"] = {**metadata, "sha256": hashlib.sha256(data).hexdigest()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    atomic_write(path, lambda tmp: _write_chunks(tmp, (struct.pack("<Q", len(text)), text, data)))


def _write_chunks(path: str, chunks: Tuple[bytes, ...]) -> None:
    with open(path, "xb") as fh:  # "x": never clobber anything
        for chunk in chunks:
            fh.write(chunk)


def _parse_json(text: Union[bytes, str], what: str) -> Any:
    """json.loads with a nesting limit (checked first, so deep nesting never reaches json's recursion) and no
    NaN/Infinity constants; ValueError for anything malformed."""
    raw = text.encode() if isinstance(text, str) else bytes(text)
    # Depth: brackets outside strings (strings, escaped quotes included, removed first), vectorized.
    steps = np.frombuffer(re.sub(rb'"(?:[^"\\]|\\.)*"', b"", raw), dtype=np.uint8)
    depth = np.cumsum(np.isin(steps, _OPEN).astype(np.int64) - np.isin(steps, _CLOSE))
    if depth.size and int(depth.max()) > _MAX_JSON_DEPTH:
        raise ValueError(f"{what}: JSON nested deeper than {_MAX_JSON_DEPTH} levels")

    def reject(constant: str) -> None:
        raise ValueError(f"the constant {constant} is not allowed")

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=reject)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{what}: malformed JSON ({exc})") from None


def _check_version(meta: Dict[str, Any], path: Union[str, os.PathLike]) -> None:
    version = meta.get("version")
    if version == VERSION:
        return
    if isinstance(version, str) and version.isdigit() and int(version) > int(VERSION):
        raise ValueError(f"file: {path} is format version {version}, newer than version {VERSION} that this "
                         "fastdistill reads; upgrade fastdistill to load it")
    raise ValueError(f"file: {path} has an unknown format version {version!r}; this fastdistill reads version "
                     f"{VERSION}")


def _read(path: Union[str, os.PathLike]) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    with open(path, "rb") as fh:
        blob = fh.read()
    if len(blob) < 8:
        raise ValueError(f"file: {path} is truncated ({len(blob)} bytes, no header length)")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > _MAX_HEADER or 8 + n > len(blob):
        raise ValueError(f"file: {path} is truncated or corrupt (header of {n} bytes, file of {len(blob)})")
    header = _parse_json(blob[8:8 + n], f"file: {path} header")
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise ValueError(f"file: {path} has a corrupt header (expected a JSON object with __metadata__)")
    meta = header.pop("__metadata__")
    if meta.get("format") != FORMAT or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError(f"file: {path} has a corrupt header (not a fastdistill file)")
    _check_version(meta, path)
    data = memoryview(blob)[8 + n:]
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise ValueError(f"file: {path} is truncated or modified (data checksum mismatch)")
    tensors: Dict[str, torch.Tensor] = {}
    spans = []
    for name, info in header.items():
        try:
            if not isinstance(info, dict) or not isinstance(info.get("dtype"), str):
                raise ValueError(f"expected {{dtype, shape, data_offsets}}, got {info!r}"[:200])
            dtype = _FROM_NAME[info["dtype"]]
            shape = _check_shape(info["shape"], "tensor")
            offsets = info["data_offsets"]
            if not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets):
                raise ValueError(f"data_offsets {offsets!r} are not two ints")
            begin, end = offsets
            size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            if not 0 <= begin <= end <= len(data) or end - begin != size:
                raise ValueError(f"offsets {begin}..{end} do not hold {shape} {info['dtype']}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"file: {path} entry {name!r} is malformed ({exc})") from None
        spans.append((begin, end))
        raw = bytearray(data[begin:end])
        t = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        tensors[name] = t.view(dtype).reshape(shape) if size else torch.empty(shape, dtype=dtype)
    spans.sort()
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:])) or sum(e - b for b, e in spans) != len(data):
        raise ValueError(f"file: {path} has overlapping tensors or unaccounted bytes")
    return tensors, meta


# ------------------------------------------------------------------------------------------------ public API


def _state_of(model: Union[nn.Module, Mapping[str, Entry]]) -> Tuple[Dict[str, Entry], Dict[str, int], Dict[str, str]]:
    if isinstance(model, nn.Module):
        sl = {name: m.in_features for name, m in model.named_modules() if isinstance(m, SparseLinear)}
        modules = {name: type(m).__name__ for name, m in model.named_modules() if isinstance(m, _MODULES)}
        return dict(model.state_dict()), sl, modules
    if isinstance(model, Mapping):
        return dict(model), {}, {}
    raise TypeError(f"model: expected an nn.Module or a mapping of tensors, got {type(model).__name__}")


def save(model: Union[nn.Module, Mapping[str, Entry]], path: Union[str, os.PathLike]) -> None:
    """Writes ``model``'s state (or a dict of tensors / SparseWeights) to ``path`` in the compact safe format
    described in this module's docstring.

    Example::

        >>> fastdistill.save(model, "student.fd")
        >>> fastdistill.load("student.fd", copy_of_the_model_architecture)
    """
    if sys.byteorder != "little":
        raise RuntimeError("save: the file format is little-endian; big-endian hosts are not supported")
    state, sparse_linear, modules = _state_of(model)
    tensors, encodings = _encode(state, sparse_linear)
    _write(path, tensors, {"format": FORMAT, "version": VERSION, "encodings": json.dumps(encodings),
                           "modules": json.dumps(modules)})


def model_size(model: Union[nn.Module, Mapping[str, Entry]]) -> int:
    """Bytes of tensor data ``save`` would write for ``model`` (the header adds a few hundred bytes).

    Example::

        >>> fastdistill.model_size(nn.Linear(1000, 1000))
        4004000
    """
    state, sparse_linear, _ = _state_of(model)
    tensors, _ = _encode(state, sparse_linear)
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _fit_module(model: nn.Module, name: str, kind: Optional[str], state: Dict[str, Entry], encodings: Dict) -> None:
    """Makes ``model``'s layer ``name`` able to take the stored tensors: a SparseLinear built from them in place of
    the layer, a resized Linear, pruning-mask buffers."""
    prefix = f"{name}." if name else ""
    module = model.get_submodule(name)
    if kind == "SparseLinear":
        if not isinstance(module, (nn.Linear, SparseLinear)) or not name:
            raise ValueError(f"model: layer {name!r} is a {type(module).__name__}; the file holds a SparseLinear")
        w = SparseWeight(state[prefix + "indptr"], state[prefix + "indices"], state[prefix + "values"],
                         tuple(encodings[name]["shape"]), state.get(prefix + "scale"))
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, SparseLinear(w, state.get(prefix + "bias")))
    elif kind == "Int8Linear":
        if not isinstance(module, (nn.Linear, Int8Linear)) or not name:
            raise ValueError(f"model: layer {name!r} is a {type(module).__name__}; the file holds an Int8Linear")
        out_features, in_features = state[prefix + "weight_int8"].shape
        q = Int8Linear(in_features, out_features, prefix + "bias" in state,
                       outliers=state[prefix + "outlier_channels"].numel())
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, q)
    elif kind in _SHAPED_BY_STATE:
        if not name:
            raise ValueError(f"model: the file holds a {kind} as the whole model")
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, _SHAPED_BY_STATE[kind].for_state(module, state, prefix))
    elif kind is not None:
        raise ValueError(f"file: unknown module type {kind!r} for layer {name!r}")
    elif type(module) is nn.Linear and prefix + "weight" in state:
        w = state[prefix + "weight"]
        if tuple(w.shape) != tuple(module.weight.shape):
            module.out_features, module.in_features = w.shape
            module.weight = nn.Parameter(torch.empty(w.shape, dtype=module.weight.dtype),
                                         requires_grad=module.weight.requires_grad)
            if module.bias is not None:
                module.bias = nn.Parameter(torch.empty(w.shape[0], dtype=module.bias.dtype),
                                           requires_grad=module.bias.requires_grad)


def load(path: Union[str, os.PathLike], model: Optional[nn.Module] = None, *, max_bytes: Optional[int] = None):
    """Reads a file written by :func:`save`. Without ``model``, returns the state as a dict (SparseLinear layers as
    their ``indptr``/``indices``/``values`` (and int8 ``scale``) buffers, saved SparseWeights as SparseWeight). With ``model`` (the same
    architecture, pruned or not), puts SparseLinear layers and resized Linear layers in place, loads every tensor
    (strictly: every key must match) and returns the model; outputs are bit-identical to the saved model's.

    ``max_bytes``: the most memory the decoded tensors may take (checked from the header before anything is
    allocated); default 64 times the file's size, at least 256 MiB. Raise it for a trusted file holding, say, a
    huge all-zero tensor stored in a few bytes. Malformed, truncated, modified, too large or newer-version files
    raise ValueError.

    Example::

        >>> state = fastdistill.load("student.fd")
    """
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0):
        raise ValueError(f"max_bytes: expected a non-negative int or None, got {max_bytes!r}")
    tensors, meta = _read(path)
    encodings = _parse_json(meta.get("encodings", "{}"), f"file: {path} metadata 'encodings'")
    modules = _parse_json(meta.get("modules", "{}"), f"file: {path} metadata 'modules'")
    if not isinstance(modules, dict) or not all(isinstance(v, str) for v in modules.values()):
        raise ValueError(f"file: {path} has corrupt metadata ('modules' is not an object of strings)")
    decoded = _decoded_bytes(encodings, tensors)
    limit = max(64 * os.path.getsize(path), 256 << 20) if max_bytes is None else max_bytes
    if decoded > limit:
        raise ValueError(f"file: {path} decodes to {decoded} bytes, more than the allowed {limit} "
                         f"(max_bytes; default 64 x the file's {os.path.getsize(path)} bytes, at least 256 MiB); "
                         "pass a larger max_bytes to load() if you trust the file")
    state = _decode(tensors, encodings)
    if model is None:
        return state
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module or None, got {type(model).__name__}")
    try:
        for name, kind in modules.items():
            _fit_module(model, name, kind, state, encodings)
        fit_to_state(model, state)  # pruned widths, heads and dropped layers
        for name, module in list(model.named_modules()):
            if type(module) is nn.Linear:
                _fit_module(model, name, None, state, encodings)
    except (AttributeError, KeyError, TypeError) as exc:
        raise ValueError(f"model: does not match the file ({exc})") from None
    restore_masks(model, state)  # pruning masks on every prunable layer type, kept through optimizer steps
    model.load_state_dict(state, strict=True)
    return model
