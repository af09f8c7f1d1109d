"""fastdistill.export.onnx: compressed models written with standard ONNX operators and run by onnxruntime (a test
extra), outputs compared with the PyTorch model on inputs of other shapes than the traced ones."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import fastdistill as fd

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.numpy() for k, v in feeds.items()})


def op_types(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_int8_and_int4_linear_match(tmp_path, gen):
    model = nn.Sequential(nn.Linear(48, 96), nn.GELU(), nn.Linear(96, 96), nn.ReLU(), nn.Linear(96, 10)).eval()
    x = torch.randn(64, 48, generator=gen)
    x[:, 5] *= 40  # an outlier channel, kept in fp32 by the calibrated Int8Linear
    q8 = fd.compress.quantize(model, calibration=[x])
    assert q8[0].outlier_channels.tolist() == [5]
    q4 = fd.compress.quantize(model, bits=4, group_size=16)
    for m in q4.modules():
        if isinstance(m, fd.nn.Int4Linear):
            m.activations = "float"  # what the ONNX graph computes
    for name, q in (("int8", q8), ("int4", q4)):
        path = fd.export.onnx(q, tmp_path / f"{name}.onnx", x[:2])
        assert ("MatMulInteger" in op_types(path)) == (name == "int8")
        xs = torch.randn(7, 48, generator=gen)  # another batch size: the batch dimension is dynamic
        (got,) = run(path, {"input_0": xs})
        with torch.no_grad():
            want = q(xs).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    inits = {i.name: i for i in onnx.load(str(tmp_path / "int8.onnx")).graph.initializer}
    assert sum(i.data_type == onnx.TensorProto.INT8 for i in inits.values()) == 3  # weights stay int8


def test_conv_embedding_and_sparse(tmp_path, gen):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(30, 32)
            self.conv = nn.Conv2d(2, 8, 3, padding=1)
            self.fc = nn.Linear(32 + 8 * 16, 64)
            self.out = nn.Linear(64, 5)

        def forward(self, ids, img):
            h = torch.cat([self.emb(ids).sum(1), torch.relu(self.conv(img)).flatten(1)], -1)
            return self.out(torch.relu(self.fc(h)))

    model = Net().eval()
    fd.compress.prune(model, 0.9, include=["fc"])
    q = fd.compress.quantize(model, include=[nn.Conv2d, nn.Embedding, "out"])
    fd.compress.sparsify(q, measure=False)
    assert isinstance(q.fc, fd.nn.SparseLinear)
    ids, img = torch.randint(0, 30, (2, 3), generator=gen), torch.randn(2, 2, 4, 4, generator=gen)
    path = fd.export.onnx(q, tmp_path / "net.onnx", (ids, img))
    proto = onnx.load(str(path))
    assert len(proto.graph.sparse_initializer) == 1
    assert {"DequantizeLinear", "Conv", "Gather", "MatMulInteger"} <= op_types(path)
    ids, img = torch.randint(0, 30, (5, 3), generator=gen), torch.randn(5, 2, 4, 4, generator=gen)
    (got,) = run(path, {"input_0": ids, "input_1": img})
    with torch.no_grad():
        want = q(ids, img).numpy()
    # the ONNX conv reads float activations where Int8Conv2d rounds them to int8 per pixel
    assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()
    dense = fd.export.onnx(q, tmp_path / "dense.onnx", (ids, img), sparse=False)
    assert not onnx.load(str(dense)).graph.sparse_initializer


def test_bert_with_keyword_inputs(tmp_path, gen):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64)
    torch.manual_seed(0)
    bert = transformers.BertModel(cfg).eval()
    q = fd.compress.quantize(bert, include=[nn.Linear, nn.Embedding])
    batch = {"input_ids": torch.randint(1, 90, (2, 6), generator=gen),
             "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    path = fd.export.onnx(q, tmp_path / "bert.onnx", batch)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state", "pooler_output"]
    other = {"input_ids": torch.randint(1, 90, (3, 11), generator=gen), "attention_mask": torch.ones(3, 11,
                                                                                                    dtype=torch.long)}
    other["attention_mask"][0, 7:] = 0
    got = session.run(None, {k: v.numpy() for k, v in other.items()})[0]
    with torch.no_grad():
        want = q(**other).last_hidden_state.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


def test_bad_arguments(tmp_path):
    model = nn.Linear(4, 2)
    with pytest.raises(ValueError, match="opset"):
        fd.export.onnx(model, tmp_path / "m.onnx", torch.randn(1, 4), opset=11)
    with pytest.raises(ValueError, match="sparse"):
        fd.export.onnx(model, tmp_path / "m.onnx", torch.randn(1, 4), sparse="yes")
    with pytest.raises(ValueError, match="example_inputs"):
        fd.export.onnx(model, tmp_path / "m.onnx", None)
    with pytest.raises(TypeError, match="model"):
        fd.export.onnx("model", tmp_path / "m.onnx", torch.randn(1, 4))
    with pytest.raises(ValueError, match="bare"):
        fd.export.onnx(fd.nn.Int8Linear.from_float(model), tmp_path / "m.onnx", torch.randn(1, 4))
