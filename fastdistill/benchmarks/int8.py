"""int8 benchmarks: Int8Linear against quantize_dynamic's Linear (fbgemm) and fp32 F.linear, and the raw int8_mm
against torch._int_mm (oneDNN; AMX tiles where the CPU has them)."""
from __future__ import annotations

import warnings
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

import fastdistill as fd
from ..bench import Row, compare, suite

WEIGHTS = [(1024, 1024), (4096, 1024)]  # (out, in)
BATCHES = [1, 16, 128, 1024]


def quantize_dynamic_linear(lin: nn.Linear) -> nn.Module:
    """quantize_dynamic's Linear (fbgemm; per-tensor weights, per-batch uint8 activations), the peer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)[0]


@suite("int8")
def int8_suite(quick: bool) -> Iterator[Row]:
    gen = torch.Generator().manual_seed(0)
    for n, k in WEIGHTS[-1:] if quick else WEIGHTS:
        lin = nn.Linear(k, n)
        ours_mod = fd.nn.Int8Linear.from_float(lin)
        peer_mod = quantize_dynamic_linear(lin)
        for m in BATCHES:
            x = torch.randn(m, k, generator=gen)
            label = f"Linear {n}x{k} (out x in), M={m}"
            repeat = 6 if m >= 1024 else 15

            def ours():
                with torch.no_grad():
                    return ours_mod(x)

            def peer():
                with torch.no_grad():
                    return peer_mod(x)

            yield compare("int8", label, ours, peer, ours_name="nn.Int8Linear", peer_name="quantize_dynamic Linear",
                          target=">=1x peer", repeat=repeat)
            yield compare("int8", label, ours, lambda: F.linear(x, lin.weight.detach(), lin.bias.detach()),
                          ours_name="nn.Int8Linear", peer_name="fp32 F.linear",
                          target=">=3x peer" if m >= 16 else None, repeat=repeat)
    s = 2048
    a = torch.randint(-128, 128, (s, s), generator=gen, dtype=torch.int8)
    b = torch.randint(-128, 128, (s, s), generator=gen, dtype=torch.int8)
    packed = fd.prepack_int8_weight(b)
    yield compare("int8", f"int8_mm {s}^3", lambda: fd.int8_mm(a, packed), lambda: torch._int_mm(a, b),
                  ours_name="int8_mm (prepacked b)", peer_name="torch._int_mm", target=">=0.9x peer", repeat=6)
    if not quick:
        yield compare("int8", f"int8_mm {s}^3", lambda: fd.int8_mm(a, b), lambda: torch._int_mm(a, b),
                      ours_name="int8_mm (packs b per call)", peer_name="torch._int_mm", repeat=6)
