"""The same Distiller script under torchrun (2 CPU processes, gloo) matches the single-process run with the same
global batch, with fp32 gradients and with the int8 all-reduce hook; and the hook's arithmetic on one process."""
from __future__ import annotations

import os
import subprocess
import sys

import torch
from torch.utils.data.distributed import DistributedSampler

import fastdistill as fd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ddp_worker  # noqa: E402


def test_torchrun_matches_one_process(tmp_path):
    out = tmp_path / "ddp.pt"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fd.__file__)), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(HERE, "ddp_worker.py"), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(out, weights_only=True)
    assert got["world"] == 2

    data = ddp_worker.problem()[0]
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=ddp_worker.SEED)
    want_loss, want_state, _ = ddp_worker.run(32, sampler=sampler)  # the same global batch, one process
    loss, state = got["plain"]
    print("fp32 all-reduce: losses", loss, "vs", want_loss)
    assert max(abs(a - b) for a, b in zip(loss, want_loss)) < 1e-5
    for k, v in want_state.items():
        torch.testing.assert_close(state[k], v, rtol=1e-4, atol=1e-5)
    loss, state = got["hook"]
    print("int8 all-reduce: losses", loss, "vs", want_loss)
    assert max(abs(a - b) / b for a, b in zip(loss, want_loss)) < 2e-3
    for k, v in want_state.items():
        assert float((state[k] - v).norm() / v.norm()) < 1e-2, k


def test_quantized_hook_averages_with_error_feedback(monkeypatch):
    """One process (world size 1) through a gloo group: the hook returns the int8 round trip of the bucket, and the
    rounding error is carried into the next call."""
    import torch.distributed as dist

    from fastdistill.distributed import QuantizedAllReduceState, quantized_allreduce_hook

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(29500 + os.getpid() % 1000))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        class Bucket:
            def __init__(self, t):
                self.t = t

            def buffer(self):
                return self.t

            def index(self):
                return 0

        state = QuantizedAllReduceState()
        g = torch.randn(1000, generator=torch.Generator().manual_seed(0))
        first = quantized_allreduce_hook(state, Bucket(g.clone())).wait()
        q = fd.quantize(g, 8)
        torch.testing.assert_close(first, q.dequantize(), rtol=0, atol=0)
        residual = g - first
        second = quantized_allreduce_hook(state, Bucket(g.clone())).wait()
        torch.testing.assert_close(second, fd.quantize(g + residual, 8).dequantize(), rtol=0, atol=0)
        # over two steps the error feedback keeps the sum of what was sent close to the sum of the gradients
        assert float((first + second - 2 * g).abs().max()) <= float(q.scale) * 0.5 + 1e-6
    finally:
        dist.destroy_process_group()
