"""Compression benchmarks: int4 linear layers against fp32 and int8 (all-MiniLM-L6-v2's shapes), Wanda masks against
magnitude masks of the same tensor, and Int8Conv2d against fp32 convolutions (a digits CNN's shapes, batch 64)."""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

import fastdistill as fd
from ..bench import Row, compare, suite

MINILM = [(384, 384), (1536, 384), (384, 1536)]  # (out, in): attention projections, FFN in, FFN out


@suite("int4")
def int4_suite(quick: bool) -> Iterator[Row]:
    torch.manual_seed(0)
    for n, k in MINILM[1:2] if quick else MINILM:
        lin = nn.Linear(k, n)
        q4 = fd.nn.Int4Linear.from_float(lin, group_size=128)
        q8 = fd.nn.Int8Linear.from_float(lin)
        for m in (1, 17) if quick else (1, 17, 128):
            x = torch.randn(m, k)
            label = f"Linear {n}x{k} g128, M={m}"

            def ours():
                with torch.no_grad():
                    return q4(x)

            yield compare("int4", label, ours, lambda: F.linear(x, lin.weight.detach(), lin.bias.detach()),
                          ours_name="Int4Linear (auto route)", peer_name="fp32 F.linear", target=">=1x peer")
            yield compare("int4", label, ours, lambda: q8(x), ours_name="Int4Linear (auto route)",
                          peer_name="Int8Linear")


@suite("wanda")
def wanda_suite(quick: bool) -> Iterator[Row]:
    torch.manual_seed(0)
    for shape in [(1536, 384)] if quick else [(1536, 384), (384, 1536), (4096, 4096)]:
        w = torch.randn(shape)
        norms = torch.rand(shape[1]) + 0.1
        yield compare("wanda", f"{shape[0]}x{shape[1]} fp32 s=0.5", lambda: fd.wanda_mask(w, norms, 0.5),
                      lambda: fd.magnitude_mask(w, 0.5), ours_name="wanda_mask (per row)",
                      peer_name="magnitude_mask (same tensor)", target=">=0.5x peer",
                      repeat=3 if w.numel() > 4e6 else 15)


@suite("conv")
def conv_suite(quick: bool) -> Iterator[Row]:
    torch.manual_seed(0)
    shapes = [(1, 32, 8, 3, 1), (32, 64, 8, 3, 1), (64, 64, 4, 3, 1)]  # (in, out, spatial, kernel, padding)
    for cin, cout, hw, ks, pad in shapes[1:2] if quick else shapes:
        conv = nn.Conv2d(cin, cout, ks, padding=pad).eval()
        q = fd.nn.Int8Conv2d.from_float(conv)
        x = torch.randn(64, cin, hw, hw)

        def ours():
            with torch.no_grad():
                return q(x)

        def peer():
            with torch.no_grad():
                return conv(x)

        yield compare("conv", f"Conv2d {cin}->{cout} {ks}x{ks} on {hw}x{hw}, batch 64", ours, peer,
                      ours_name="Int8Conv2d", peer_name="fp32 Conv2d")
