"""Data-compression kernels (kmeans_assign, centroid_sums, column_stats, bin_codes, joint_histograms,
quantize/dequantize_columns, delta_encode/decode): every backend and SIMD level against the pure-torch reference
on awkward sizes (0 and 1 rows, 1 feature, odd sizes, microkernel tile edges, non-contiguous views, large inputs),
exactly for integer outputs; their bad-input errors; opcheck."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastdistill as fd
from fastdistill import _ops
from fastdistill.data import bin_codes, joint_histograms, kmeans_assign

# (rows, features, centroids): empty, single row / feature / centroid, the avx512 (12 x 32) and avx2 (6 x 16) tile
# edges and their neighbours, centroid counts around the panel widths and past one 512-centroid block.
ASSIGN_SHAPES = [(0, 3, 2), (1, 1, 1), (5, 1, 3), (11, 3, 31), (13, 9, 33), (7, 17, 17), (25, 64, 256), (37, 5, 513),
                 (2000, 20, 50)]
CODE_SHAPES = [(0, 3), (1, 1), (7, 1), (15, 3), (17, 64), (257, 9), (1000, 63), (3, 130)]


def ref(op, *args):
    with fd.use_backend("python"):
        return getattr(_ops, op)(*[a.cpu() if isinstance(a, torch.Tensor) else a for a in args])


def run(op, device, *args):
    """The op through its custom op (which hands the kernels contiguous tensors)."""
    out = getattr(_ops, op)(*[a.to(device) if isinstance(a, torch.Tensor) else a for a in args])
    return tuple(o.cpu() for o in out) if isinstance(out, tuple) else out.cpu()


def exact_distances(x, c):
    return ((x.double()[:, None, :] - c.double()[None]) ** 2).sum(-1)


def check_assignment(x, c, labels, d2):
    """Each label is a nearest centroid up to fp32 rounding of the GEMM form (the tolerance scales with the norms
    that form cancels), exactly the reference's label wherever the best centroid wins by more than that."""
    if x.shape[0] == 0:
        assert labels.shape == (0,) and d2.shape == (0,)
        return
    D = exact_distances(x, c)
    best = D.min(1).values
    scale = (x.double() ** 2).sum(1) + (c.double() ** 2).sum(1).max()
    tol = 64 * 2.0 ** -24 * max(x.shape[1], 1) * scale
    chosen = D[torch.arange(len(labels)), labels]
    assert bool((chosen <= best + tol).all())
    assert torch.allclose(d2.double(), chosen, atol=float(tol.max()), rtol=1e-5)
    second = D.clone()
    second[torch.arange(len(labels)), D.argmin(1)] = float("inf")
    clear = (second.min(1).values - best) > 2 * tol if c.shape[0] > 1 else torch.ones(len(labels), dtype=torch.bool)
    assert torch.equal(labels[clear], D.argmin(1)[clear])


@pytest.mark.parametrize("n,d,k", ASSIGN_SHAPES, ids=lambda v: str(v))
def test_kmeans_assign_matches_reference(backend, gen, n, d, k):
    x = torch.randn(n, d, generator=gen)
    c = torch.randn(k, d, generator=gen)
    labels, d2 = run("kmeans_assign", backend, x, c)
    assert labels.dtype == torch.int64 and d2.dtype == torch.float32
    check_assignment(x, c, labels, d2)
    want_labels, want_d2 = ref("kmeans_assign", x, c)
    check_assignment(x, c, want_labels, want_d2)


def test_kmeans_assign_ties_take_the_first(backend, gen):
    c = torch.randn(40, 6, generator=gen)
    c[25] = c[3]  # duplicated centroids: the smaller index wins
    x = c[[3, 25, 3, 0]] + 0.0
    labels, d2 = run("kmeans_assign", backend, x, c)
    assert labels.tolist() == [3, 3, 3, 0]
    assert float(d2.max()) < 1e-4


def test_kmeans_assign_large_and_noncontiguous(backend, gen):
    x = torch.randn(3001, 70, generator=gen)[:, ::2]  # 35 strided columns
    c = torch.randn(600, 70, generator=gen)[::2, 1::2]
    labels, d2 = kmeans_assign(x.to(backend), c.to(backend))
    check_assignment(x, c, labels.cpu(), d2.cpu())


def test_kmeans_assign_errors(backend, gen):
    x = torch.randn(20, 4, generator=gen)
    bad = x.clone()
    bad[7, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        run("kmeans_assign", backend, bad, x[:3].contiguous())
    with pytest.raises(ValueError, match="centroid 1 is not finite"):
        c = x[:3].clone()
        c[1, 0] = float("inf")
        run("kmeans_assign", backend, x, c)
    with pytest.raises(ValueError, match="at least one centroid"):
        kmeans_assign(x, torch.empty(0, 4))
    with pytest.raises(ValueError, match="4 columns"):
        kmeans_assign(x, torch.randn(3, 5))


@pytest.mark.parametrize("n,d,k", [(0, 3, 2), (1, 1, 1), (5, 7, 3), (4097, 9, 1), (20001, 33, 257), (9, 0, 4)],
                         ids=lambda v: str(v))
def test_centroid_sums_match_reference(backend, gen, n, d, k):
    x = torch.randn(n, d, generator=gen)
    labels = torch.randint(0, k, (n,), generator=gen)
    sums, counts = run("centroid_sums", backend, x, labels, k)
    want_sums, want_counts = ref("centroid_sums", x, labels, k)
    assert sums.dtype == torch.float64 and sums.shape == (k, d) and counts.dtype == torch.int64
    assert torch.equal(counts, want_counts) and int(counts.sum()) == n
    torch.testing.assert_close(sums, want_sums, rtol=1e-12, atol=1e-9)  # float64 sums of float32 values
    bad = labels.clone()
    if n:
        bad[n // 2] = k
        with pytest.raises(ValueError, match="outside"):
            run("centroid_sums", backend, x, bad, k)


@pytest.mark.parametrize("n,d", [(0, 3), (1, 1), (2, 5), (17, 1), (1001, 63), (70001, 3)], ids=lambda v: str(v))
def test_column_stats_match_reference(backend, gen, n, d):
    x = torch.randn(n, d, generator=gen) * 3
    if n > 4:
        x[3] = 0.0  # exact zeros: not the smallest nonzero magnitude
        x[:, 0] = 2.5  # a constant column
    got = run("column_stats", backend, x)
    want = ref("column_stats", x)
    assert got.dtype == torch.float64 and got.shape == (6, d)
    exact = [0, 1, 3, 4, 5]  # min, max, max|x|, min nonzero |x|, max step: exact; the float64 sum up to rounding
    assert torch.equal(got[exact], want[exact])
    torch.testing.assert_close(got[2], want[2], rtol=1e-12, atol=1e-9)
    if n:
        bad = x.clone()
        bad[n // 2, d - 1] = float("nan")
        with pytest.raises(ValueError, match="NaN or infinite"):
            run("column_stats", backend, bad)


def sorted_edges(d, m, gen, ties=False):
    e = torch.sort(torch.randn(d, m, generator=gen) * 2, dim=1).values
    if ties and m > 3:
        e[:, 1:3] = e[:, 1:2]  # repeated edges (a feature with few distinct values)
    return e.contiguous()


@pytest.mark.parametrize("n,d", CODE_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("m", [0, 7, 255])
def test_bin_codes_match_reference(backend, gen, n, d, m):
    x = torch.randn(n, d, generator=gen) * 2
    edges = sorted_edges(d, m, gen, ties=True)
    if n and d and m:
        x[0, 0] = edges[0, m // 2]  # a value equal to an edge goes above it
    got = run("bin_codes", backend, x, edges)
    want = ref("bin_codes", x, edges)
    assert got.dtype == torch.uint8 and got.shape == (d, n)
    assert torch.equal(got, want)
    np.testing.assert_array_equal(want.numpy(), np.stack([np.searchsorted(edges[j].numpy(), x[:, j].numpy(),
                                                                          side="right") for j in range(d)])
                                  .reshape(d, n).astype(np.uint8))


def test_bin_codes_noncontiguous_and_errors(backend, gen):
    x = torch.randn(40, 12, generator=gen)[::3, ::2]
    edges = sorted_edges(6, 20, gen)
    assert torch.equal(bin_codes(x.to(backend), edges.to(backend)).cpu(), ref("bin_codes", x.contiguous(), edges))
    bad = x.contiguous()
    bad[2, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        run("bin_codes", backend, bad, edges)
    unsorted = edges.clone()
    unsorted[4, 3] = 99.0
    with pytest.raises(ValueError, match="feature 4 has NaN or unsorted edges"):
        run("bin_codes", backend, x.contiguous(), unsorted)


@pytest.mark.parametrize("d,n,n_target,n_bins", [(0, 5, 2, 4), (3, 0, 2, 4), (1, 1, 1, 1), (5, 17, 3, 256),
                                                 (64, 2001, 2, 54), (2, 5000, 200, 200), (1, 70001, 4, 9)])
def test_joint_histograms_match_reference(backend, gen, d, n, n_target, n_bins):
    codes = torch.randint(0, n_bins, (d, n), generator=gen, dtype=torch.int32).to(torch.uint8)
    target = torch.randint(0, n_target, (n,), generator=gen, dtype=torch.int32)
    got = run("joint_histograms", backend, codes, target, n_target, n_bins)
    want = ref("joint_histograms", codes, target, n_target, n_bins)
    assert got.dtype == torch.int64 and got.shape == (d, n_target, n_bins)
    assert torch.equal(got, want)
    if d and n:
        assert int(want[0, int(target[0]), int(codes[0, 0])]) >= 1 and int(want.sum()) == d * n


def test_joint_histograms_errors(backend, gen):
    codes = torch.randint(0, 4, (3, 50), generator=gen, dtype=torch.int32).to(torch.uint8)
    target = torch.randint(0, 2, (50,), generator=gen, dtype=torch.int32)
    with pytest.raises(ValueError, match="n_bins"):
        run("joint_histograms", backend, codes, target, 2, 3)  # codes reach 3
    bad = target.clone()
    bad[9] = 5
    with pytest.raises(ValueError, match="outside"):
        run("joint_histograms", backend, codes, bad, 2, 4)
    with pytest.raises(ValueError, match="n_bins: expected 1..256"):
        run("joint_histograms", backend, codes, target, 2, 300)
    out = joint_histograms(codes.numpy(), target.numpy(), 2, 4)
    assert isinstance(out, np.ndarray) and out.shape == (3, 2, 4)


def column_params(d, gen, signed):
    scale = torch.rand(d, generator=gen) * 0.1 + 1e-3
    offset = torch.zeros(d) if signed else torch.randn(d, generator=gen)
    return scale, offset


@pytest.mark.parametrize("n,d", CODE_SHAPES + [(70001, 1), (1001, 65)], ids=lambda v: str(v))
@pytest.mark.parametrize("qmin,qmax", [(0, 255), (-127, 127), (1, 15)])
def test_quantize_columns_match_reference(backend, gen, n, d, qmin, qmax):
    x = torch.randn(n, d, generator=gen) * 5
    scale, offset = column_params(d, gen, qmin < 0)
    if n and d:
        x[0, 0] = (0.5 + 3) * scale[0] + offset[0]  # an exact tie: half-to-even
        x[-1, -1] = 1e30  # clipped
    got = run("quantize_columns", backend, x, scale, offset, qmin, qmax)
    want = ref("quantize_columns", x, scale, offset, qmin, qmax)
    assert got.dtype == (torch.int8 if qmin < 0 else torch.uint8) and got.shape == (n, d)
    assert torch.equal(got, want)
    back = run("dequantize_columns", backend, got, scale, offset)
    assert torch.equal(back, ref("dequantize_columns", want, scale, offset))
    inside = (want.to(torch.int32) > qmin) & (want.to(torch.int32) < qmax)
    assert bool(((back - x).abs()[inside] <= 0.5001 * scale.expand_as(x)[inside]).all())


def test_quantize_columns_noncontiguous_and_errors(backend, gen):
    x = torch.randn(30, 20, generator=gen)[1::2, ::3]
    scale, offset = column_params(7, gen, False)
    assert torch.equal(run("quantize_columns", backend, x, scale, offset, 0, 255),
                       ref("quantize_columns", x.contiguous(), scale, offset, 0, 255))
    bad = x.contiguous()
    bad[3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        run("quantize_columns", backend, bad, scale, offset, 0, 255)
    zero = scale.clone()
    zero[2] = 0.0
    with pytest.raises(ValueError, match="column 2"):
        run("quantize_columns", backend, x.contiguous(), zero, offset, 0, 255)
    with pytest.raises(ValueError, match="qmin, qmax"):
        run("quantize_columns", backend, x.contiguous(), scale, offset, -1, 200)


@pytest.mark.parametrize("n,d", CODE_SHAPES + [(5000, 3)], ids=lambda v: str(v))
@pytest.mark.parametrize("block", [1, 64, 100000])
def test_delta_codes_match_reference(backend, gen, n, d, block):
    t = torch.linspace(0, 20, max(n, 1))[:n, None]
    x = torch.sin(t * torch.rand(d, generator=gen)[None] * 3) * 4 + torch.randn(n, d, generator=gen) * 0.05
    if n > 3:
        x[n // 2] += 30.0  # a jump the step scale cannot follow: clipped, recovered by the closed loop
    anchor = torch.full((d,), 40.0 / 127)
    step = torch.full((d,), 0.5 / 127)
    got = run("delta_encode", backend, x, anchor, step, block, 127)
    want = ref("delta_encode", x, anchor, step, block, 127)
    assert got.dtype == torch.int8 and torch.equal(got, want)
    back = run("delta_decode", backend, got, anchor, step, block)
    assert torch.equal(back, ref("delta_decode", want, anchor, step, block))


def test_delta_codes_bounded_error(backend, gen):
    """The closed loop keeps a step's error within half a step whenever its code is not clipped (the error does not
    accumulate along the block); an anchor's within half an anchor step."""
    n, d, block = 640, 4, 64
    x = torch.cumsum(torch.randn(n, d, generator=gen) * 0.01, 0)
    anchor = x.abs().amax(0) / 127
    step = (x[1:] - x[:-1]).abs().amax(0) / 127
    codes = run("delta_encode", backend, x, anchor, step, block, 127)
    back = run("delta_decode", backend, codes, anchor, step, block)
    err = (back - x).abs()
    rounding = 4 * 2.0 ** -24 * float(x.abs().max())  # fp32 rounding of the running values
    anchors = (torch.arange(n) % block == 0)[:, None].expand(n, d)
    free = ~anchors & (codes.abs() < 127)
    assert bool(free.float().mean() > 0.9)
    assert bool((err <= 0.5 * step + rounding)[free].all())
    assert bool((err <= 0.5 * anchor + rounding)[anchors].all())


def test_delta_errors(backend, gen):
    x = torch.randn(10, 3, generator=gen)
    one = torch.ones(3)
    with pytest.raises(ValueError, match="block"):
        run("delta_encode", backend, x, one, one, 0, 127)
    with pytest.raises(ValueError, match="qmax"):
        run("delta_encode", backend, x, one, one, 4, 128)
    bad = x.clone()
    bad[4, 1] = float("-inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        run("delta_encode", backend, bad, one, one, 4, 127)


@pytest.mark.parametrize("op", ["kmeans_assign", "centroid_sums", "column_stats", "bin_codes", "joint_histograms",
                                "quantize_columns", "dequantize_columns", "delta_encode", "delta_decode"])
def test_opcheck(gen, op):
    x = torch.randn(9, 5, generator=gen)
    ones = torch.ones(5)
    args = {"kmeans_assign": (x, x[:3].clone()),
            "centroid_sums": (x, torch.randint(0, 3, (9,)), 3),
            "column_stats": (x,),
            "bin_codes": (x, sorted_edges(5, 6, gen)),
            "joint_histograms": (torch.randint(0, 4, (5, 9), dtype=torch.int32).to(torch.uint8),
                                 torch.randint(0, 2, (9,), dtype=torch.int32), 2, 4),
            "quantize_columns": (x, ones * 0.1, ones * 0.0, 0, 255),
            "dequantize_columns": (torch.randint(0, 255, (9, 5), dtype=torch.int32).to(torch.uint8), ones, ones),
            "delta_encode": (x, ones, ones * 0.1, 4, 127),
            "delta_decode": (torch.randint(-9, 9, (9, 5), dtype=torch.int32).to(torch.int8), ones, ones, 4)}[op]
    torch.library.opcheck(getattr(_ops, op), args, test_utils=("test_schema", "test_faketensor"))
