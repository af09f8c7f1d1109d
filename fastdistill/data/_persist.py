"""``save`` / ``load`` of fitted data compressors (one, or a Pipeline / list of them) in the library's pickle-free
file format (:mod:`fastdistill.compress.io`: a JSON header, raw little-endian tensors, a checksum; nothing in it is
ever executed).

Each estimator's fitted arrays (its ``_persist`` attributes; nested dicts of arrays too) are stored as tensors named
``<step>.<attribute>[/<key>]``; its constructor parameters and fitted scalars go in the ``"estimators"`` metadata
entry as JSON. Arrays of strings (class labels) are stored in the JSON. A parameter that is itself an estimator (the
``estimator`` of an RFE selector) cannot be stored without pickle: it comes back as None, which a fitted selector
does not need to transform.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Tuple, Union

import numpy as np
import torch

from ..compress.io import FORMAT, VERSION, _read, _write

CONTENT = "fastdistill.data"


def _classes() -> Dict[str, type]:
    from .cluster import ClusterCompressor
    from .pca import PCACompressor
    from .quantize import DataQuantizer
    from .select import FeatureSelector

    return {c.__name__: c for c in (PCACompressor, ClusterCompressor, FeatureSelector, DataQuantizer)}


def _json_value(v: Any) -> Any:
    if isinstance(v, (bool, str)) or v is None:
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    raise TypeError(type(v).__name__)


def _encode(value: Any, name: str, tensors: Dict[str, torch.Tensor]) -> Any:
    """JSON for ``value``; its numeric arrays go into ``tensors`` (referenced as {"tensor": name})."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf":
            tensors[name] = torch.from_numpy(np.ascontiguousarray(value))
            return {"tensor": name}
        return {"strings": [str(x) for x in value.ravel()], "shape": list(value.shape)}
    if isinstance(value, dict):
        return {"dict": {k: _encode(v, f"{name}/{k}", tensors) for k, v in value.items()}}
    return {"value": _json_value(value)}


def _decode(enc: Dict[str, Any], tensors: Dict[str, torch.Tensor]) -> Any:
    if "tensor" in enc:
        return tensors.pop(enc["tensor"]).numpy()
    if "strings" in enc:
        return np.array(enc["strings"], dtype=object).reshape(enc["shape"])
    if "dict" in enc:
        return {k: _decode(v, tensors) for k, v in enc["dict"].items()}
    return enc["value"]


def _params(est: Any) -> Dict[str, Any]:
    out = {}
    for k, v in est.get_params(deep=False).items():
        try:
            out[k] = _json_value(v)
        except TypeError:
            out[k] = None  # an estimator object: not storable without pickle (see the module docstring)
    return out


def save(obj: Any, path: Union[str, os.PathLike]) -> None:
    """Writes a fitted :mod:`fastdistill.data` compressor, or a ``Pipeline`` / list of them, to ``path``.

    Example::

        >>> fastdistill.data.save(Pipeline([("pca", PCACompressor(0.95)), ("q", DataQuantizer())]).fit(X), "c.fd")
        >>> pipe = fastdistill.data.load("c.fd")
    """
    from sklearn.pipeline import Pipeline

    if sys.byteorder != "little":
        raise RuntimeError("save: the file format is little-endian; big-endian hosts are not supported")
    if isinstance(obj, Pipeline):
        names, steps, kind = [n for n, _ in obj.steps], [s for _, s in obj.steps], "pipeline"
    elif isinstance(obj, (list, tuple)):
        names, steps, kind = [str(i) for i in range(len(obj))], list(obj), "list"
    else:
        names, steps, kind = ["0"], [obj], "single"
    known = _classes()
    tensors: Dict[str, torch.Tensor] = {}
    entries: List[Dict[str, Any]] = []
    for name, est in zip(names, steps):
        if type(est).__name__ not in known or not isinstance(est, known[type(est).__name__]):
            raise TypeError(f"obj: expected fastdistill.data compressors, got {type(est).__name__}")
        attrs = {a: _encode(getattr(est, a), f"{name}.{a}", tensors) for a in est._persist if hasattr(est, a)}
        entries.append({"name": name, "class": type(est).__name__, "params": _params(est), "attributes": attrs})
    _write(path, tensors, {"format": FORMAT, "version": VERSION, "content": CONTENT, "kind": kind,
                           "estimators": json.dumps(entries)})


def load(path: Union[str, os.PathLike]) -> Any:
    """Reads what :func:`save` wrote: the compressor, or a ``Pipeline`` / list of them."""
    tensors, meta = _read(path)
    if meta.get("content") != CONTENT:
        raise ValueError(f"file: {path} does not hold fastdistill.data compressors (see fastdistill.load)")
    known = _classes()
    steps: List[Tuple[str, Any]] = []
    try:
        for entry in json.loads(meta["estimators"]):
            est = known[entry["class"]](**entry["params"])
            for attr, enc in entry["attributes"].items():
                setattr(est, attr, _decode(enc, tensors))
            steps.append((entry["name"], est))
        kind = meta["kind"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"file: {path} has corrupt compressor metadata ({type(exc).__name__}: {exc})") from None
    if tensors:
        raise ValueError(f"file: {path} holds tensors no compressor claims: {sorted(tensors)[:5]}")
    if kind == "pipeline":
        from sklearn.pipeline import Pipeline

        return Pipeline(steps)
    if kind == "list":
        return [s for _, s in steps]
    return steps[0][1]
