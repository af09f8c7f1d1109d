"""Quantization benchmarks on a 4096x4096 fp32 weight: quantize / dequantize against torch's (deprecated) quantized
tensors and an eager-torch group-wise int4, with the memory-traffic floor of each op."""
from __future__ import annotations

from typing import Iterator

import torch

import fastdistill as fd
from ..bench import Row, compare, suite


def torch_per_tensor_absmax(w: torch.Tensor) -> torch.Tensor:
    """torch's per-tensor int8 with its absmax scale computed without a temporary (one aminmax pass)."""
    lo, hi = torch.aminmax(w)
    return torch.quantize_per_tensor(w, float(torch.maximum(lo.abs(), hi.abs())) / 127, 0, torch.qint8)


def torch_group_int4(w: torch.Tensor, group: int = 128) -> torch.Tensor:
    """Eager-torch symmetric group-wise int4 with nibble packing (what users write without a kernel)."""
    g = w.reshape(-1, group)
    scale = g.abs().amax(1, keepdim=True) / 7
    codes = torch.clamp(torch.round(g / scale), -7, 7).to(torch.uint8) + 8
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def torch_group_int4_dequant(packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    lo = (packed & 15).to(torch.int8) - 8
    hi = (packed >> 4).to(torch.int8) - 8
    return torch.stack((lo, hi), -1).reshape(packed.shape[0], -1).float() * scale[:, None]


@suite("quant")
def quant_suite(quick: bool) -> Iterator[Row]:
    w = torch.randn(4096, 4096, generator=torch.Generator().manual_seed(0))
    label = "4096x4096 fp32"
    rep = 6 if quick else 15
    zeros = torch.zeros(w.shape[0], dtype=torch.long)
    peer_pc = lambda: torch.quantize_per_channel(w, w.abs().amax(1) / 127, zeros, 0, torch.qint8)  # noqa: E731
    i8 = torch.empty(w.shape, dtype=torch.int8)
    read_write_int8 = lambda: i8.copy_(w)  # noqa: E731  reads 64 MiB, writes 16 MiB: the quantize floor
    ours_pc = lambda: fd.quantize(w, 8, granularity="channel")  # noqa: E731
    yield compare("quant", f"{label} int8 per-channel (incl. scales)", ours_pc, peer_pc,
                  ours_name="quantize(channel)", peer_name="quantize_per_channel(amax/127)", floor=read_write_int8,
                  floor_name="int8.copy_(w)", target=">=10x peer, <=2x floor", repeat=rep)
    yield compare("quant", f"{label} int8 per-tensor", lambda: fd.quantize(w, 8),
                  lambda: torch.quantize_per_tensor(w, 0.01, 0, torch.qint8), ours_name="quantize(tensor, incl. scale)",
                  peer_name="quantize_per_tensor(given scale)", floor=read_write_int8, floor_name="int8.copy_(w)",
                  target=">=1x peer", repeat=rep)
    yield compare("quant", f"{label} int8 per-tensor", lambda: fd.quantize(w, 8), lambda: torch_per_tensor_absmax(w),
                  ours_name="quantize(tensor, incl. scale)", peer_name="aminmax + quantize_per_tensor", repeat=rep)
    q8, qt = fd.quantize(w, 8, granularity="channel"), peer_pc()
    f32 = torch.empty_like(w)
    write_f32 = lambda: f32.copy_(i8)  # noqa: E731  reads 16 MiB, writes 64 MiB: the dequantize floor
    yield compare("quant", f"{label} int8 per-channel dequantize", q8.dequantize, qt.dequantize,
                  ours_name="QuantizedTensor.dequantize", peer_name="qtensor.dequantize()", floor=write_f32,
                  floor_name="f32.copy_(int8)", target=">=5x peer", repeat=rep)
    yield compare("quant", f"{label} int8 per-channel dequantize", lambda: q8.dequantize(out=f32), qt.dequantize,
                  ours_name="dequantize(out=reused buffer)", peer_name="qtensor.dequantize()", floor=write_f32,
                  floor_name="f32.copy_(int8)", target=">=5x peer", repeat=rep)
    ours_g4 = lambda: fd.quantize(w, 4, granularity="group", group_size=128)  # noqa: E731
    yield compare("quant", f"{label} int4 group-128 quantize+pack", ours_g4, lambda: torch_group_int4(w),
                  ours_name="quantize(group 128, 4 bit)", peer_name="eager torch group int4", repeat=rep)
    yield compare("quant", f"{label} int4 group-128 quantize+pack", ours_g4, ours_pc,
                  ours_name="quantize(group 128, 4 bit)", peer_name="ours int8 per-channel",
                  target="peer/ours >= 0.5", repeat=rep)
    q4 = ours_g4()
    packed, scale4 = torch_group_int4(w), w.reshape(-1, 128).abs().amax(1) / 7
    yield compare("quant", f"{label} int4 group-128 unpack+dequantize", q4.dequantize,
                  lambda: torch_group_int4_dequant(packed, scale4), ours_name="QuantizedTensor.dequantize",
                  peer_name="eager torch unpack+dequant", floor=write_f32, floor_name="f32.copy_(int8)", repeat=rep)
    yield compare("quant", f"{label} int4 group-128 unpack+dequantize", q4.dequantize, q8.dequantize,
                  ours_name="QuantizedTensor.dequantize", peer_name="ours int8 per-channel dequantize",
                  target="peer/ours >= 0.5", repeat=rep)
