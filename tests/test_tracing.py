"""torch.jit.trace records fastdistill's ops (not the empty buffers their kernels fill): traced models give the
eager results on new inputs, of other batch sizes too, and survive torch.jit.save/load."""
import io

import pytest
import torch
from torch import nn

import fastdistill as fd


def _roundtrip(traced):
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    buf.seek(0)
    return torch.jit.load(buf)


@pytest.mark.parametrize("make", ["int8", "sparse"])
def test_traced_compressed_model_matches_eager(make, gen):
    model = nn.Sequential(nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 8))
    if make == "int8":
        model = fd.compress.quantize(model)
    else:
        fd.compress.prune(model, 0.9)
        fd.compress.sparsify(model, min_sparsity=0.5, measure=False)
        assert any(isinstance(m, fd.nn.SparseLinear) for m in model.modules())
    model.eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, (torch.randn(2, 48, generator=gen),), check_trace=False)
        for rows in (1, 5):
            x = torch.randn(rows, 48, generator=gen)
            want = model(x)
            torch.testing.assert_close(traced(x), want, rtol=0, atol=0)
            torch.testing.assert_close(_roundtrip(traced)(x), want, rtol=0, atol=0)

