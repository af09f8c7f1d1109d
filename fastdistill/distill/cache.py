"""Offline teachers: run the teacher once, keep its top-k, train students without it.

A cache is a directory:

* ``manifest.json`` (written last, so a cache cut short has none): ``format`` ``"fastdistill-teacher-cache"``,
  ``version``, ``vocab_size``, ``top_k``, ``temperature``, ``row_shape`` (the rows of one sample: ``[]`` for a
  classifier, ``[T]`` for a sequence of T tokens), ``num_samples``, ``dtype`` and ``shards`` (file name and sample
  count of each);
* ``shard-NNNNN.fd``: :func:`fastdistill.save` files (pickle-free, checksummed) holding ``sample_index`` (int64, the
  dataset index of each sample), ``indices`` ((samples, *row_shape, top_k), int16 when the vocabulary allows, else
  int32), ``log_probs`` (the same shape, ``dtype``: bf16 by default) and ``tail`` ((samples, *row_shape) float32,
  the probability outside the top-k).

Log-probabilities are ``log_softmax(logits / temperature)`` over the full vocabulary, sorted in decreasing order;
a :class:`~fastdistill.distill.SparseKDLoss` at the same temperature trains on them (``loss="entropy_sparse"``).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..compress.io import load, save
from ..fused_linear_kd import default_chunk_size
from ._batch import call, output_tensor, split, to_device
from ._data import rebuild_loader
from .._files import atomic_write
from .losses import SparseTeacher

FORMAT, VERSION = "fastdistill-teacher-cache", 1
MANIFEST = "manifest.json"
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _check_head(head: Any) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    if head is None:
        return None, None
    if isinstance(head, nn.Linear):
        return head.weight.detach(), None if head.bias is None else head.bias.detach()
    if isinstance(head, Tensor) and head.dim() == 2:
        return head.detach(), None
    raise TypeError(f"head: expected an LM-head weight (V, d) tensor or an nn.Linear, got {type(head).__name__}")


def _top_k_rows(rows: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], k: int, temperature: float,
                chunk: int) -> Tuple[Tensor, Tensor, Tensor]:
    """(indices, log_probs, tail) of the (n, V) logits ``rows``, or of ``rows @ weight.T + bias`` made ``chunk``
    rows at a time when a head is given (never more than chunk x V logits)."""
    out_i, out_v, out_t = [], [], []
    step = rows.shape[0] if weight is None else chunk
    for start in range(0, rows.shape[0], max(1, step)):
        x = rows[start:start + step]
        logits = x if weight is None else F.linear(x.to(weight.dtype), weight, bias)
        lp = torch.log_softmax(logits.float() / temperature, -1)
        top = lp.topk(k, -1)
        out_i.append(top.indices)
        out_v.append(top.values)
        out_t.append((1.0 - top.values.double().exp().sum(-1)).clamp_min(0.0).float())
    if not out_i:
        V = rows.shape[-1] if weight is None else weight.shape[0]
        return (torch.empty(0, min(k, V), dtype=torch.int64), torch.empty(0, min(k, V)), torch.empty(0))
    return torch.cat(out_i), torch.cat(out_v), torch.cat(out_t)


def cache_teacher(teacher: nn.Module, loader: torch.utils.data.DataLoader, path: Union[str, os.PathLike], *,
                  top_k: int = 64, temperature: float = 1.0, head: Any = None, dtype: torch.dtype = torch.bfloat16,
                  shard_samples: int = 65536, device: Optional[Union[str, torch.device]] = None) -> "TeacherCache":
    """Runs ``teacher`` (in eval mode, without gradients) over every batch of ``loader`` and writes, per row of its
    output, the top-``top_k`` log-probabilities at ``temperature`` (stored as ``dtype``, bf16 by default), their
    vocabulary indices and the tail mass, to the cache directory ``path`` (layout in this module's docstring).
    Returns the :class:`TeacherCache` reading it.

    Rows are keyed by dataset index, so the loader may shuffle; its dataset must be map-style (it is read through
    ``dataset[i]``, with the loader's batch size, collate function and workers). Batches are as the Distiller
    takes them; the teacher's output gives the logits (``.logits`` or the tensor itself). With ``head`` (an LM-head
    weight ``(V, d)`` or an ``nn.Linear``), the teacher's output is taken as hidden states ``(..., d)`` and the
    logits are made a chunk of rows at a time (as in :func:`fastdistill.fused_linear_kd_loss`), so no
    ``rows x V`` logits tensor is ever held. Every sample must give the same number of rows.

    Example::

        >>> cache = cache_teacher(teacher, train_loader, "teacher-cache", top_k=64, temperature=4.0)
        >>> d = Distiller(cache, student, loss=SparseKDLoss(temperature=4.0))
    """
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher: expected an nn.Module, got {type(teacher).__name__}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k: expected an int >= 1, got {top_k!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
        raise ValueError(f"temperature: expected a finite number > 0, got {temperature!r}")
    names = {v: k for k, v in _DTYPES.items()}
    if dtype not in names:
        raise ValueError(f"dtype: expected one of {sorted(_DTYPES)}, got {dtype}")
    if isinstance(shard_samples, bool) or not isinstance(shard_samples, int) or shard_samples < 1:
        raise ValueError(f"shard_samples: expected an int >= 1, got {shard_samples!r}")
    weight, bias = _check_head(head)
    dev = torch.device(device) if device is not None else next(
        (p.device for p in teacher.parameters()), torch.device("cpu"))
    if weight is not None:
        weight, bias = weight.to(dev), None if bias is None else bias.to(dev)
    os.makedirs(path, exist_ok=True)
    if os.path.exists(os.path.join(path, MANIFEST)):
        os.remove(os.path.join(path, MANIFEST))  # the directory is a cache again only when the new one is complete
    was_training = teacher.training
    teacher.eval()
    writer = _ShardWriter(path, shard_samples)
    vocab = row_shape = None
    try:
        with torch.no_grad():
            for idx, batch in rebuild_loader(loader, indexed=True):
                inputs, _ = split(to_device(batch, dev))
                out = output_tensor(call(teacher, inputs), "teacher")
                V = int(weight.shape[0]) if weight is not None else int(out.shape[-1])
                if weight is not None and out.shape[-1] != weight.shape[1]:
                    raise ValueError(f"head: expected the teacher's hidden size {out.shape[-1]} as its second "
                                     f"dimension, got {tuple(weight.shape)}")
                if out.shape[0] != idx.shape[0]:
                    raise ValueError(f"teacher: its output's first dimension {out.shape[0]} is not the batch size "
                                     f"{idx.shape[0]}")
                shape = tuple(out.shape[1:-1])
                if row_shape is None:
                    vocab, row_shape = V, shape
                    k = min(top_k, V)
                elif shape != row_shape:
                    raise ValueError(f"loader: every sample must give the same rows; got {shape} after {row_shape} "
                                     "(pad sequences to one length)")
                rows = out.reshape(-1, out.shape[-1])
                i, v, t = _top_k_rows(rows, weight, bias, k, float(temperature), default_chunk_size(V))
                n = idx.shape[0]
                writer.add(idx, (i.to(torch.int16 if V <= 32767 else torch.int32).reshape(n, *shape, k).cpu(),
                                 v.to(dtype).reshape(n, *shape, k).cpu(), t.reshape(n, *shape).cpu()))
        if row_shape is None:
            raise ValueError("loader: yielded no batch, nothing to cache")
        shards = writer.close()
    finally:
        teacher.train(was_training)
    manifest = {"format": FORMAT, "version": VERSION, "vocab_size": vocab, "top_k": min(top_k, vocab),
                "temperature": float(temperature), "row_shape": list(row_shape), "num_samples": writer.samples,
                "dtype": names[dtype], "shards": shards}
    _write_json(os.path.join(path, MANIFEST), manifest)
    return TeacherCache(path)


def _write_json(path: str, obj: Dict[str, Any]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=1)

    atomic_write(path, write)


class _ShardWriter:
    def __init__(self, path: Union[str, os.PathLike], shard_samples: int):
        self.path, self.shard_samples = path, shard_samples
        self.parts: List[Tuple[Tensor, Tuple[Tensor, Tensor, Tensor]]] = []
        self.pending = 0
        self.samples = 0
        self.shards: List[Dict[str, Any]] = []

    def add(self, idx: Tensor, arrays: Tuple[Tensor, Tensor, Tensor]) -> None:
        self.parts.append((idx, arrays))
        self.pending += idx.shape[0]
        self.samples += idx.shape[0]
        while self.pending >= self.shard_samples:
            self._flush(self.shard_samples)

    def _flush(self, n: int) -> None:
        idx = torch.cat([p[0] for p in self.parts])
        arrays = [torch.cat([p[1][j] for p in self.parts]) for j in range(3)]
        name = f"shard-{len(self.shards):05d}.fd"
        save({"sample_index": idx[:n], "indices": arrays[0][:n], "log_probs": arrays[1][:n], "tail": arrays[2][:n]},
             os.path.join(self.path, name))
        self.shards.append({"file": name, "samples": int(n)})
        rest = idx.shape[0] - n
        self.parts = [(idx[n:], tuple(a[n:] for a in arrays))] if rest else []  # type: ignore[misc]
        self.pending = rest

    def close(self) -> List[Dict[str, Any]]:
        if self.pending:
            self._flush(self.pending)
        return self.shards


class TeacherCache:
    """A teacher written by :func:`cache_teacher`, served from disk: give it to a Distiller in place of the teacher
    (``Distiller(TeacherCache(path), student, loss="entropy_sparse")``); the teacher model need not be loaded.

    ``cache[indices]`` (dataset indices, a sequence or int64 tensor) gives a :class:`SparseTeacher` of shape
    ``(len(indices), *row_shape, top_k)``: int64 indices, float32 log-probabilities, float32 tail. Shards are read
    on first use and kept. :meth:`check` raises a clear error when the cache does not fit a dataset or a student.

    Example::

        >>> cache = TeacherCache("teacher-cache")
        >>> len(cache), cache.vocab_size, cache.top_k
        (1347, 10, 10)
    """

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = os.fspath(path)
        manifest_path = os.path.join(self.path, MANIFEST)
        if not os.path.isfile(manifest_path):
            raise ValueError(f"TeacherCache: {self.path!r} holds no {MANIFEST} (not a teacher cache, or its writing "
                             "did not finish)")
        try:
            with open(manifest_path) as fh:
                m = json.load(fh)
            if not isinstance(m, dict) or m.get("format") != FORMAT:
                raise ValueError(f"format is {m.get('format') if isinstance(m, dict) else None!r}")
        except ValueError as exc:
            raise ValueError(f"TeacherCache: {manifest_path} is not a teacher-cache manifest ({exc})") from None
        if m.get("version") != VERSION:
            raise ValueError(f"TeacherCache: {self.path!r} has cache version {m.get('version')!r}; this fastdistill "
                             f"reads version {VERSION} (write the cache again with cache_teacher)")
        try:
            self.vocab_size, self.top_k = int(m["vocab_size"]), int(m["top_k"])
            self.temperature = float(m["temperature"])
            self.row_shape = tuple(int(d) for d in m["row_shape"])
            self.num_samples = int(m["num_samples"])
            self.dtype = _DTYPES[m["dtype"]]
            self._shards = [(str(s["file"]), int(s["samples"])) for s in m["shards"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"TeacherCache: {manifest_path} is malformed ({exc!r})") from None
        if sum(n for _, n in self._shards) != self.num_samples:
            raise ValueError(f"TeacherCache: {manifest_path} lists shards of {sum(n for _, n in self._shards)} "
                             f"samples but num_samples {self.num_samples}")
        self._loaded: Dict[int, Dict[str, Tensor]] = {}
        self._where: Optional[Tensor] = None  # dataset index -> (shard << 40) | row

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (f"TeacherCache({self.path!r}, samples={self.num_samples}, vocab_size={self.vocab_size}, "
                f"top_k={self.top_k}, temperature={self.temperature}, row_shape={self.row_shape})")

    def check(self, num_samples: Optional[int] = None, vocab_size: Optional[int] = None,
              temperature: Optional[float] = None) -> None:
        """Raises ValueError naming what differs when the cache was not written for this dataset (sample count),
        student (vocabulary) or loss (temperature)."""
        if num_samples is not None and num_samples != self.num_samples:
            raise ValueError(f"TeacherCache: {self.path!r} holds {self.num_samples} samples but the loader's dataset "
                             f"has {num_samples}: it was written from another dataset")
        if vocab_size is not None and vocab_size != self.vocab_size:
            raise ValueError(f"TeacherCache: {self.path!r} was written for a vocabulary of {self.vocab_size} but the "
                             f"student's output has {vocab_size} classes")
        if temperature is not None and not math.isclose(temperature, self.temperature, rel_tol=1e-6):
            raise ValueError(f"TeacherCache: {self.path!r} holds log-probabilities at temperature {self.temperature}"
                             f" but the loss uses {temperature}; write the cache at the loss's temperature")

    def _shard(self, s: int) -> Dict[str, Tensor]:
        if s not in self._loaded:
            name, n = self._shards[s]
            state = load(os.path.join(self.path, name))
            want = {"sample_index": (n,), "indices": (n, *self.row_shape, self.top_k),
                    "log_probs": (n, *self.row_shape, self.top_k), "tail": (n, *self.row_shape)}
            for key, shape in want.items():
                if key not in state or tuple(state[key].shape) != shape:
                    got = tuple(state[key].shape) if key in state else None
                    raise ValueError(f"TeacherCache: shard {name} holds {key} of shape {got}, expected {shape}")
            self._loaded[s] = state
        return self._loaded[s]

    def _locate(self) -> Tensor:
        if self._where is None:
            where = torch.full((self.num_samples,), -1, dtype=torch.int64)
            for s, (name, n) in enumerate(self._shards):
                idx = self._shard(s)["sample_index"]
                if n and (int(idx.min()) < 0 or int(idx.max()) >= self.num_samples):
                    raise ValueError(f"TeacherCache: shard {name} holds sample indices outside "
                                     f"[0, {self.num_samples})")
                where[idx] = (s << 40) | torch.arange(n, dtype=torch.int64)
            if bool((where < 0).any()):
                missing = int((where < 0).nonzero()[0])
                raise ValueError(f"TeacherCache: {self.path!r} has no rows for sample {missing} (its samples were "
                                 "written twice or not at all)")
            self._where = where
        return self._where

    def __getitem__(self, indices: Union[Tensor, List[int], int]) -> SparseTeacher:
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_samples):
            raise IndexError(f"TeacherCache: sample index out of range [0, {self.num_samples})")
        where = self._locate()[idx]
        shard, row = where >> 40, where & ((1 << 40) - 1)
        shape = (idx.numel(), *self.row_shape, self.top_k)
        out_i = torch.empty(shape, dtype=torch.int64)
        out_v = torch.empty(shape, dtype=torch.float32)
        out_t = torch.empty(shape[:-1], dtype=torch.float32)
        for s in shard.unique().tolist():
            sel = shard == s
            state = self._shard(s)
            rows = row[sel]
            out_i[sel] = state["indices"][rows].to(torch.int64)
            out_v[sel] = state["log_probs"][rows].float()
            out_t[sel] = state["tail"][rows]
        return SparseTeacher(out_i, out_v, out_t)

    def __iter__(self) -> Iterator[SparseTeacher]:
        raise TypeError("TeacherCache: index it with dataset indices (cache[indices]); it is not iterable")
