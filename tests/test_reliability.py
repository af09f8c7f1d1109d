"""Regression tests of issue 11 (reliability), one per row of its table, and the rules the rows generalise to: no
object a user can build makes a kernel read out of bounds; NaN in gives NaN out (never a finite loss with a NaN
gradient); extreme temperatures and logits match an exact (60-digit) computation; pruning masks are state; backend
choice is process-wide; empty batches work; arguments are named in errors. docs/errors.md is the user-facing table."""
from __future__ import annotations

import builtins
import copy
import io
import os
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal, getcontext

import numpy as np
import pytest
import torch
from torch import nn

import fastdistill as fd
from fastdistill import _ops
from fastdistill.int8 import PackedInt8Weight
from fastdistill.quantization import QuantizedTensor


# ------------------------------------------------------------------------------------------------ rows 1, 2: sizes


def test_row1_quantized_tensor_constructor_checks_what_kernels_read(backend, gen):
    q = fd.quantize(torch.randn(2, 16, generator=gen), 8, granularity="channel")
    meta = dict(bits=8, scheme="symmetric", granularity="channel", axis=0, group_size=0, dtype=torch.float32)
    for shape in ((2, 10**8), (2, 4096), (3, 16)):
        with pytest.raises(ValueError, match="codes|scale"):
            QuantizedTensor(q.codes, q.scale, q.zero_point, shape=shape, **meta)
    with pytest.raises(ValueError, match="axis"):
        QuantizedTensor(q.codes, q.scale, q.zero_point, **{**meta, "axis": 2}, shape=(2, 16))
    with pytest.raises(TypeError, match="bits"):
        QuantizedTensor(q.codes, q.scale, q.zero_point, **{**meta, "bits": 8.0}, shape=(2, 16))
    ok = QuantizedTensor(q.codes, q.scale, q.zero_point, shape=(np.int64(2), 16), **meta)  # numpy ints accepted
    assert torch.equal(ok.dequantize(), q.dequantize()) and ok.shape == (2, 16)
    # a QuantizedTensor altered after construction (its slots are writable): the kernels still refuse to read past
    # the codes (ValueError, or torch's RuntimeError on the reference), never a crash or garbage
    ok.codes = q.codes[:, :4].contiguous()
    with pytest.raises((ValueError, RuntimeError)):
        ok.dequantize()
    with pytest.raises((ValueError, RuntimeError)):
        _ops.call("dequantize", q.codes[:, :4].contiguous(), q.scale, q.zero_point, 8, "symmetric", 4096)


def test_row2_packed_weight_constructor_checks_scales(backend, gen):
    w = fd.prepack_int8_weight(fd.quantize(torch.randn(100, 32, generator=gen), 8, granularity="channel"))
    with pytest.raises(ValueError, match="scale"):
        PackedInt8Weight(w.codes, w.scale[:1].contiguous(), w.packed, w.comp)
    with pytest.raises(TypeError, match="codes"):
        PackedInt8Weight(w.codes.float(), w.scale, w.packed, w.comp)
    with pytest.raises(ValueError, match="codes"):
        PackedInt8Weight(w.codes.t(), w.scale, w.packed, w.comp)  # not contiguous
    x = torch.randn(3, 32, generator=gen)
    if fd.get_backend() != "native":  # the native kernel takes N from the scales and checks the panels against it
        with pytest.raises(ValueError, match="wscale|codes"):
            _ops.call("int8_linear", x, w.codes, w.scale[:1].contiguous(), w.packed, w.comp, None)
        with pytest.raises(ValueError, match="codes|b"):
            _ops.call("int8_mm_packed", torch.zeros(3, 31, dtype=torch.int8), w.codes, w.packed, w.comp)


# ------------------------------------------------------------------------------------------------ rows 3, 12: masks

LAYERS = {
    "linear": (lambda: nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 5)), (6, 12)),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(3, 8, 3), nn.ReLU(), nn.Conv1d(8, 4, 3)), (2, 3, 12)),
    "conv2d": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)), (2, 3, 9, 9)),
    "conv3d": (lambda: nn.Sequential(nn.Conv3d(2, 4, 2), nn.ReLU(), nn.Conv3d(4, 3, 2)), (2, 2, 5, 5, 5)),
    "convtranspose": (lambda: nn.Sequential(nn.ConvTranspose2d(3, 6, 3), nn.ReLU(), nn.Linear(9, 4)),
                      (2, 3, 7, 7)),
}


def _train(model: nn.Module, shape, gen, steps: int = 3) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(shape, generator=gen)).square().sum().backward()
        opt.step()


def _sparsity(model: nn.Module) -> float:
    return fd.compress.sparsity(model)["total"]


def _copies(model, make, tmp_path):
    """A pruned model carried every way a user carries a model."""
    path = tmp_path / "m.fd"
    fd.save(model, path)
    yield "fd.save/load", fd.load(path, make())
    yield "deepcopy", copy.deepcopy(model)
    yield "pickle", pickle.loads(pickle.dumps(model))
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    yield "torch.save/load", torch.load(buf, weights_only=False)
    fresh = make()
    state = model.state_dict()
    assert fd.compress.restore_masks(fresh, state) == 2
    fresh.load_state_dict(state)
    yield "state_dict", fresh


@pytest.mark.parametrize("kind", list(LAYERS))
def test_rows3_12_masks_survive_copies_files_and_state_dicts(kind, tmp_path, gen):
    make, shape = LAYERS[kind]
    model = make()
    fd.compress.prune(model, 0.8)
    before = _sparsity(model)
    assert before > 0.75
    for how, copied in _copies(model, make, tmp_path):
        assert _sparsity(copied) == before, how
        _train(copied, shape, gen)
        assert _sparsity(copied) == before, f"{how}: masks not enforced after optimizer steps"
        for name, m in copied.named_modules():
            if hasattr(m, "weight_mask"):
                assert bool((m.weight[~m.weight_mask] == 0).all()), (how, name)
    _train(model, shape, gen)  # the original still trains pruned, unaffected by its copies
    assert _sparsity(model) == before


def test_row3_masks_under_ddp_and_reprune(tmp_path, gen):
    import torch.distributed as dist

    make, shape = LAYERS["linear"]
    model = make()
    fd.compress.prune(model, 0.5)
    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(copy.deepcopy(model))
        _train(ddp, shape, gen)
        assert _sparsity(ddp.module) == _sparsity(model)
    finally:
        dist.destroy_process_group()
    fd.compress.prune(model, 0.9)  # re-pruning at a higher sparsity replaces the masks the hook applies
    _train(model, shape, gen)
    assert abs(_sparsity(model) - 0.9) < 0.01
    assert fd.compress.remove_pruning(model) == 2
    _train(model, shape, gen)
    assert _sparsity(model) < 0.5  # no mask any more: the zeros train away


def test_restore_masks_rejects_mismatched_masks():
    make, _ = LAYERS["linear"]
    with pytest.raises(ValueError, match="0.weight_mask"):
        fd.compress.restore_masks(make(), {"0.weight_mask": torch.ones(3, 3, dtype=torch.bool)})


# ------------------------------------------------------------------------------------------------ rows 4, 5: NaN


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_row4_int8_linear_nan_row_gives_nan_outputs(backend, gen, bad):
    lin = nn.Linear(40, 70)
    model = fd.compress.quantize(nn.Sequential(lin))
    for rows in (1, 3, 70):
        x = torch.randn(rows, 40, generator=gen)
        x[0, 7] = bad
        with torch.no_grad():
            y = model(x)
        assert bool(y[0].isnan().all()), "a row with NaN/inf must give NaN outputs (as F.linear does for NaN)"
        assert bool(y[1:].isfinite().all())
        with fd.use_backend("python"):
            ref = model(x)
        torch.testing.assert_close(y[1:], ref[1:], rtol=1e-5, atol=1e-5)


def _nan_teacher(kind: str, gen) -> torch.Tensor:
    t = torch.randn(4, 33, generator=gen)
    if kind == "nan":
        t[1, 5] = float("nan")
    elif kind == "+inf":
        t[1, 5] = float("inf")
    else:
        t[1] = float("-inf")
    return t


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("kind", ["nan", "+inf", "all -inf"])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 100.0])
def test_row5_kd_loss_nan_teacher_row_is_nan_in_loss_and_gradient(backend, gen, divergence, kind, temperature):
    s = torch.randn(4, 33, generator=gen, requires_grad=True)
    t = _nan_teacher(kind, gen)
    y = torch.randint(0, 33, (4,), generator=gen)
    loss = fd.kd_loss(s, t, y, temperature=temperature, divergence=divergence, reduction="none")
    loss.sum().backward()
    assert bool(loss[1].isnan()) and bool(s.grad[1].isnan().all())
    assert bool(loss[[0, 2, 3]].isfinite().all()) and bool(s.grad[[0, 2, 3]].isfinite().all())
    s.grad = None
    total = fd.kd_loss(s, t, y, temperature=temperature, divergence=divergence)
    total.backward()
    assert bool(total.isnan())


def test_row5_fused_linear_kd_loss_nan_teacher_weight(gen):
    hs = torch.randn(6, 8, generator=gen, requires_grad=True)
    ws = torch.randn(10, 8, generator=gen, requires_grad=True)
    wt = torch.randn(10, 8, generator=gen)
    wt[2, 3] = float("nan")
    loss = fd.fused_linear_kd_loss(hs, ws, torch.randn(6, 8, generator=gen), wt, chunk_size=4)
    loss.backward()
    assert bool(loss.isnan()) and bool(ws.grad.isnan().any())


def test_row5_student_nan_and_ignored_rows(backend, gen):
    s = torch.randn(3, 9, generator=gen)
    s[0, 0] = float("nan")
    s.requires_grad_()
    y = torch.tensor([1, -100, 2])
    loss = fd.kd_loss(s, torch.randn(3, 9, generator=gen), y, reduction="none")
    loss.sum().backward()
    assert bool(loss[0].isnan()) and bool(s.grad[0].isnan().all())
    assert float(loss[1].detach()) == 0 and bool((s.grad[1] == 0).all())  # ignored rows contribute nothing


# ------------------------------------------------------------------------------------------------ row 6: extremes

getcontext().prec = 60


def exact_kd(s: torch.Tensor, t: torch.Tensor, T: float, divergence: str, beta: float = 0.5):
    """Per-row T^2 D in 60-digit decimal arithmetic (the ground truth for extreme temperatures and logits)."""
    out = []
    for srow, trow in zip(s.double().tolist(), t.double().tolist()):
        def lsm(row):
            xs = [Decimal(v) / Decimal(T) for v in row]
            m = max(xs)
            lz = sum((x - m).exp() for x in xs).ln()
            return [x - m - lz for x in xs]
        ls, lp = lsm(srow), lsm(trow)
        q, p = [v.exp() for v in ls], [v.exp() for v in lp]
        if divergence == "kl":
            d = sum(pj * (a - b) for pj, a, b in zip(p, lp, ls))
        elif divergence == "reverse_kl":
            d = sum(qj * (b - a) for qj, a, b in zip(q, lp, ls))
        else:
            B = Decimal(beta)
            lm = [(B * pj + (1 - B) * qj).ln() for pj, qj in zip(p, q)]
            d = B * sum(pj * (a - c) for pj, a, c in zip(p, lp, lm)) \
                + (1 - B) * sum(qj * (b - c) for qj, b, c in zip(q, ls, lm))
        out.append(float(Decimal(T) * Decimal(T) * d))
    return torch.tensor(out, dtype=torch.float64)


KD_RTOL = 1e-4  # docs/errors.md: loss within 1e-4 relative of the exact value at any temperature and logit size


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("temperature", [0.01, 1.0, 7.5, 1e3, 1e4, 1e6])
@pytest.mark.parametrize("scale", [1.0, 1e30])
def test_row6_extreme_temperatures_and_logits_match_exact(backend, gen, divergence, temperature, scale):
    s = torch.randn(3, 40, generator=gen)
    t = torch.randn(3, 40, generator=gen)
    if scale > 1:  # a few logits of +-1e30 among ordinary ones
        s[0, :3], s[1, 5], t[1, :2], t[2, 7] = scale, -scale, -scale, scale
    want = exact_kd(s, t, temperature, divergence)
    loss = fd.kd_loss(s, t, temperature=temperature, alpha=1.0, divergence=divergence, reduction="none")
    torch.testing.assert_close(loss.double(), want, rtol=KD_RTOL, atol=0)
    assert want.min() >= 0 and loss.min() >= 0  # never a negative divergence


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "jsd"])
def test_row6_high_temperature_gradient_matches_reference(backend, gen, divergence):
    s = torch.randn(4, 300, generator=gen) * 2
    t = torch.randn(4, 300, generator=gen) * 2
    y = torch.randint(0, 300, (4,), generator=gen)
    grads = {}
    for name in ("python", fd.get_backend()):
        with fd.use_backend(name):
            x = s.clone().requires_grad_()
            fd.kd_loss(x, t, y, temperature=1e4, alpha=0.9, divergence=divergence).backward()
            grads[name] = x.grad.double()
    ref = grads["python"]
    assert float((grads[fd.get_backend()] - ref).abs().max() / ref.abs().max()) < 1e-4


# ------------------------------------------------------------------------------------------------ row 7: threads


def test_row7_set_backend_reaches_thread_pools():
    from fastdistill._dispatch import select_kernel

    x = torch.randn(4, 4)
    args = [x, 8, "symmetric", "absmax", 99.0]
    before = fd.get_backend()
    with ThreadPoolExecutor(2) as pool:  # a pool started before the call
        pool.submit(lambda: None).result()
        fd.set_backend("python")
        try:
            seen = pool.submit(lambda: (fd.get_backend(), select_kernel("quantize", args)[0])).result()
            fresh = []
            th = threading.Thread(target=lambda: fresh.append(fd.get_backend()))
            th.start()
            th.join()
        finally:
            fd.set_backend(before)
    assert seen == ("python", "python") and fresh == ["python"]
    # use_backend is context-local: it overrides in its thread only, and threads keep the process-wide choice
    with fd.use_backend("python"):
        assert fd.get_backend() == "python"
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(fd.get_backend).result() == before
    assert fd.get_backend() == before


# ------------------------------------------------------------------------------------------------ row 8: compile


def test_row8_sparse_kd_loss_checks_teacher_under_torch_compile(gen):
    f = torch.compile(lambda s, i, v: fd.sparse_kd_loss(s, i, v, values="probs"), fullgraph=True)
    s = torch.randn(2, 10, generator=gen)
    with pytest.raises(ValueError, match="teacher_indices.*twice"):
        f(s, torch.tensor([[1, 1], [2, 3]]), torch.tensor([[0.3, 0.3], [0.2, 0.2]]))
    with pytest.raises(ValueError, match="teacher_values.*sum to more than 1"):
        f(s, torch.tensor([[1, 2], [2, 3]]), torch.tensor([[0.8, 0.7], [0.2, 0.2]]))
    with pytest.raises(ValueError, match="teacher_indices.*out of range"):
        f(s, torch.tensor([[1, 10], [2, 3]]), torch.tensor([[0.3, 0.3], [0.2, 0.2]]))
    g = torch.compile(lambda s, t, y: fd.kd_loss(s, t, y), fullgraph=True)
    with pytest.raises(ValueError, match="target"):
        g(s, torch.randn(2, 10, generator=gen), torch.tensor([0, 10]))
    good = f(s, torch.tensor([[1, 2], [2, 3]]), torch.tensor([[0.3, 0.3], [0.2, 0.2]]))
    assert torch.isfinite(good)


# ------------------------------------------------------------------------------------------------ rows 9-11, 14: files


def _write_file(path, header, data=b""):
    import json
    import struct

    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def _meta(**extra):
    import hashlib
    import json

    meta = {"format": "fastdistill", "version": "1", "sha256": hashlib.sha256(b"").hexdigest(),
            "encodings": "{}", "modules": "{}"}
    for k, v in extra.items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    return meta


def test_row9_declared_sizes_are_checked_before_allocating(tmp_path):
    import hashlib

    path = tmp_path / "bomb.fd"
    enc = {"w": {"kind": "csr", "shape": [1, 2**28], "as": "dense"}}
    indptr = np.array([0, 0], np.int64).tobytes()
    header = {"w::indptr": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]},
              "w::indices": {"dtype": "I32", "shape": [0], "data_offsets": [16, 16]},
              "w::values": {"dtype": "F32", "shape": [0], "data_offsets": [16, 16]},
              "__metadata__": _meta(encodings=enc, sha256=hashlib.sha256(indptr).hexdigest())}
    _write_file(path, header, indptr)
    assert path.stat().st_size < 600
    with pytest.raises(ValueError, match="decodes to 1073741824 bytes.*max_bytes"):
        fd.load(path)
    enc["w"]["shape"] = [1, 2**20]  # 4 MiB from a tiny file: within the default allowance of a trusted size
    header["__metadata__"] = _meta(encodings=enc, sha256=hashlib.sha256(indptr).hexdigest())
    _write_file(path, header, indptr)
    assert fd.load(path)["w"].shape == (1, 2**20)
    with pytest.raises(ValueError, match="max_bytes"):
        fd.load(path, max_bytes=1000)
    # a real all-zero tensor that large saves compactly and loads again with an explicit allowance
    fd.save({"z": torch.zeros(1, 2**27)}, path)
    assert path.stat().st_size < 4096
    with pytest.raises(ValueError, match="max_bytes"):
        fd.load(path)
    assert fd.load(path, max_bytes=2**29)["z"].shape == (1, 2**27)


def test_row10_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.fd"
    model = nn.Linear(8, 8)
    fd.save(model, path)
    old = path.read_bytes()
    calls = {"n": 0}
    real_fsync = os.fsync

    def failing_fsync(fd_):  # the disk fills up after part of the new file was written
        calls["n"] += 1
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        fd.save(nn.Linear(8, 8), path)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert calls["n"] == 1 and path.read_bytes() == old, "the old checkpoint must survive a failed save"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.fd"], "no partial/temporary file left behind"

    real_open = builtins.open

    class Midway:  # the file handle save writes to: the first chunk goes to disk, then the write fails
        def __init__(self, fh):
            self.fh, self.writes = fh, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.writes += 1
            if self.writes > 1:
                raise KeyboardInterrupt  # even an interrupt halfway leaves no partial file
            return self.fh.write(data)

    def midway_open(file, mode="r", *args, **kwargs):  # the new file's handle; reads stay as they are
        fh = real_open(file, mode, *args, **kwargs)
        return Midway(fh) if "x" in mode or "w" in mode else fh

    monkeypatch.setattr(builtins, "open", midway_open)
    with pytest.raises(KeyboardInterrupt):
        fd.save(nn.Linear(8, 8), path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.fd"]
    fd.save(nn.Linear(4, 4), path)  # and a save over an existing file replaces it whole
    assert fd.load(path)["weight"].shape == (4, 4)


def test_row11_newer_or_unknown_version_refused(tmp_path):
    path = tmp_path / "v.fd"
    _write_file(path, {"__metadata__": _meta(version="99")})
    with pytest.raises(ValueError, match="version 99.*version 1"):
        fd.load(path)
    _write_file(path, {"__metadata__": _meta(version="1.0-beta")})
    with pytest.raises(ValueError, match="unknown format version '1.0-beta'.*version 1"):
        fd.load(path)
    _write_file(path, {"__metadata__": {k: v for k, v in _meta().items() if k != "version"}})
    with pytest.raises(ValueError, match="version None"):
        fd.load(path)


MALFORMED_HEADERS = {
    "deep nesting": b"[" * 100000 + b"]" * 100000,
    "deep object": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "array": b"[1, 2]",
    "string": b'"hello"',
    "not json": b"{'a': 1}",
    "not utf8": b'{"a": "\xff\xfe"}',
    "Infinity shape": {"a": {"dtype": "F32", "shape": [float("inf")], "data_offsets": [0, 0]}},
    "NaN shape": {"a": {"dtype": "F32", "shape": [float("nan")], "data_offsets": [0, 0]}},
    "huge shape": {"a": {"dtype": "F32", "shape": [0, 10**30], "data_offsets": [0, 0]}},
    "negative shape": {"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}},
    "float shape": {"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 0]}},
    "bool shape": {"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 0]}},
    "string shape": {"a": {"dtype": "F32", "shape": "12", "data_offsets": [0, 0]}},
    "unknown dtype": {"a": {"dtype": "F128", "shape": [0], "data_offsets": [0, 0]}},
    "list dtype": {"a": {"dtype": ["F32"], "shape": [0], "data_offsets": [0, 0]}},
    "entry not object": {"a": [1, 2, 3]},
    "offsets floats": {"a": {"dtype": "F32", "shape": [0], "data_offsets": [0.0, 0.0]}},
    "offsets short": {"a": {"dtype": "F32", "shape": [0], "data_offsets": [0]}},
    "offsets past end": {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
    "metadata not object": "meta",
    "metadata values not strings": {"__metadata__": {"format": "fastdistill", "version": 1}},
    "encodings deep": {"__metadata__": _meta(encodings="[" * 10000 + "]" * 10000)},
    "encodings array": {"__metadata__": _meta(encodings=[1])},
    "encodings bad kind": {"__metadata__": _meta(encodings={"w": {"kind": "zip", "shape": [1], "as": "dense"}})},
    "encodings bad shape": {"__metadata__": _meta(encodings={"w": {"kind": "bits", "shape": [1e30], "as": "dense"}})},
    "modules not strings": {"__metadata__": _meta(modules={"a": 1})},
}


@pytest.mark.parametrize("what", list(MALFORMED_HEADERS))
def test_row14_malformed_headers_raise_value_error(tmp_path, what):
    header = MALFORMED_HEADERS[what]
    if isinstance(header, dict) and "__metadata__" not in header:
        header = {**header, "__metadata__": _meta()}
    elif header == "meta":
        header = {"__metadata__": "fastdistill"}
    path = tmp_path / "h.fd"
    _write_file(path, header)
    with pytest.raises(ValueError):
        fd.load(path)


# ------------------------------------------------------------------------------------------------ row 13: empty


@pytest.mark.parametrize("shape", [(0, 10), (0, 3, 10), (2, 0, 10)])
def test_row13_empty_batches_backward_to_empty_gradients(backend, shape):
    s = torch.randn(shape, requires_grad=True)
    for reduction in ("batchmean", "mean", "sum", "none"):
        s.grad = None
        loss = fd.kd_loss(s, torch.randn(shape), torch.zeros(shape[:-1], dtype=torch.long), reduction=reduction)
        loss.sum().backward()
        assert s.grad.shape == shape and float(loss.sum()) == 0
        s.grad = None
        k = shape[:-1] + (2,)
        loss = fd.sparse_kd_loss(s, torch.zeros(k, dtype=torch.long), torch.zeros(k), values="probs",
                                 reduction=reduction)
        loss.sum().backward()
        assert s.grad.shape == shape
    hs = torch.randn(0, 4, requires_grad=True)
    w = torch.randn(10, 4, requires_grad=True)
    fd.fused_linear_kd_loss(hs, w, torch.randn(0, 4), torch.randn(10, 4)).backward()
    assert hs.grad.shape == (0, 4) and w.grad.shape == (10, 4) and float(w.grad.abs().sum()) == 0


# ------------------------------------------------------------------------------------------------ rows 15, 16


def test_row15_forced_backend_message_says_it_cannot():
    with fd.use_backend("native"), pytest.raises(fd.BackendError, match="'native' cannot run.*float64"):
        fd.kd_loss(torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64))


def test_row16_arguments_named_and_numpy_ints_accepted(gen):
    x = torch.randn(8, 8, generator=gen)
    with pytest.raises(TypeError, match="bits: expected an int, got float 8.0"):
        fd.quantize(x, 8.0)
    with pytest.raises(TypeError, match="bits"):
        fd.fake_quantize(x, 4.0)
    assert torch.equal(fd.quantize(x, np.int64(4)).codes, fd.quantize(x, 4).codes)
    with pytest.raises(ValueError, match="ignore_index: expected a value in the int64 range"):
        fd.kd_loss(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1]), ignore_index=2**70)
    with pytest.raises(ValueError, match="ignore_index"):
        fd.sparse_kd_loss(torch.randn(2, 3), torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 1), values="probs",
                          ignore_index=-(2**64))
    assert torch.equal(fd.nm_mask(x, n=np.int64(2), m=np.int32(4)), fd.nm_mask(x, 2, 4))
    with pytest.raises(TypeError, match="n: expected an int"):
        fd.nm_mask(x, n=2.0)
    assert torch.equal(fd.channel_mask(x, 2, p=np.int64(2)), fd.channel_mask(x, 2, p=2))


def test_rows_1_2_generalised_kd_ops_check_what_kernels_index(backend, gen):
    """The kd ops reached directly (torch.ops / _ops.call, as torch.compile does) with tensors that do not fit: the
    op body refuses them before any kernel indexes a row."""
    s, t = torch.randn(4, 10, generator=gen), torch.randn(4, 10, generator=gen)
    with pytest.raises(ValueError, match="target"):
        _ops.call("kd_loss", s, t, torch.zeros(2, dtype=torch.long), 1.0, 0.5, "kl", 0.5, -100, "sum", False, "none", False)
    idx, val = torch.zeros(2, 3, dtype=torch.long), torch.full((2, 3), 0.1)
    with pytest.raises(ValueError, match="teacher_indices"):
        _ops.call("sparse_kd_loss", s, idx, val, None, None, 1.0, 1.0, "probs", "none", -100, "sum", False)
    with pytest.raises(ValueError, match="teacher_indices"):
        _ops.call("sparse_kd_loss", s, torch.zeros(4, 3, dtype=torch.long), val, None, None, 1.0, 1.0, "probs",
                  "none", -100, "sum", False)
