"""pytest-benchmark suite for quantization: ours and the PyTorch peers as separate benchmarks of one group.

Run: ``pytest benches/ --benchmark-only`` (the ratios of ``fastdistill bench quant`` come from the same cases)."""
import warnings

import pytest
import torch

import fastdistill as fd
from fastdistill.benchmarks.quant import torch_group_int4, torch_group_int4_dequant

SHAPE = (4096, 4096)
PC = "int8 per-channel quantize 4096x4096"
PT = "int8 per-tensor quantize 4096x4096"
DQ = "int8 per-channel dequantize 4096x4096"
G4 = "int4 group-128 quantize+pack 4096x4096"
G4D = "int4 group-128 unpack+dequantize 4096x4096"


@pytest.fixture(scope="module")
def weight():
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def torch_qtensor(weight):
    with warnings.catch_warnings():  # torch's quantized tensors are deprecated: that is the point of this op
        warnings.simplefilter("ignore")
        return torch.quantize_per_channel(weight, weight.abs().amax(1) / 127, torch.zeros(SHAPE[0], dtype=torch.long),
                                          0, torch.qint8)


@pytest.mark.benchmark(group=PC)
def test_fastdistill_quantize_channel(benchmark, weight):
    benchmark(fd.quantize, weight, 8, granularity="channel")


@pytest.mark.benchmark(group=PC)
def test_torch_quantize_per_channel(benchmark, weight):
    zeros = torch.zeros(SHAPE[0], dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        benchmark(lambda: torch.quantize_per_channel(weight, weight.abs().amax(1) / 127, zeros, 0, torch.qint8))


@pytest.mark.benchmark(group=PC)
def test_floor_int8_copy(benchmark, weight):
    i8 = torch.empty(SHAPE, dtype=torch.int8)
    benchmark(i8.copy_, weight)


@pytest.mark.benchmark(group=PT)
def test_fastdistill_quantize_tensor(benchmark, weight):
    benchmark(fd.quantize, weight, 8)


@pytest.mark.benchmark(group=PT)
def test_torch_quantize_per_tensor(benchmark, weight):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        benchmark(torch.quantize_per_tensor, weight, 0.01, 0, torch.qint8)


@pytest.mark.benchmark(group=DQ)
def test_fastdistill_dequantize(benchmark, weight):
    benchmark(fd.quantize(weight, 8, granularity="channel").dequantize)


@pytest.mark.benchmark(group=DQ)
def test_torch_dequantize(benchmark, torch_qtensor):
    benchmark(torch_qtensor.dequantize)


@pytest.mark.benchmark(group=G4)
def test_fastdistill_group_int4(benchmark, weight):
    benchmark(fd.quantize, weight, 4, granularity="group", group_size=128)


@pytest.mark.benchmark(group=G4)
def test_torch_eager_group_int4(benchmark, weight):
    benchmark(torch_group_int4, weight)


@pytest.mark.benchmark(group=G4D)
def test_fastdistill_group_int4_dequantize(benchmark, weight):
    benchmark(fd.quantize(weight, 4, granularity="group", group_size=128).dequantize)


@pytest.mark.benchmark(group=G4D)
def test_torch_eager_group_int4_dequantize(benchmark, weight):
    packed, scale = torch_group_int4(weight), weight.reshape(-1, 128).abs().amax(1) / 7
    benchmark(torch_group_int4_dequant, packed, scale)
