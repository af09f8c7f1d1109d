"""Sparse weights and CSR matmul: every backend against a float64 product on awkward shapes.

Float tolerance: fp32 accumulation over a row of nonzeros, so each output is compared with the float64 product
of the same (fp32 or bf16) stored values as |got - want| <= 1e-5 * sum_j |w_nj x_mj| + 1e-30. For int8 values the
stored weight is the reference's dequantized one (``to_dense()``: scale * code in fp32), so the same bound holds.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastdistill as fd
from fastdistill import _ops

# (out_features, in_features, batch): empty dims, single elements, tails shorter than a register, batches around
# the gather/tile switch and the 128-sample tile, and 32-bit column indices (in_features > 65536).
SHAPES = [(1, 1, 1), (0, 5, 3), (5, 0, 3), (7, 13, 0), (33, 17, 1), (33, 17, 3), (33, 17, 5), (31, 40, 16),
          (33, 17, 17), (65, 129, 130), (40, 300, 257), (3, 70001, 2), (3, 70001, 9)]
SPARSITIES = [0.0, 0.5, 0.93, 1.0]


def sparse_weight(rows, cols, sparsity, gen, dtype=torch.float32):
    w = torch.randn(rows, cols, generator=gen)
    w.masked_fill_(torch.rand(rows, cols, generator=gen) < sparsity, 0)
    return w.to(dtype)


def check_close(got, w, x, bias=None):
    """got == x @ w^T (+ bias) in float64, within the fp32-accumulation tolerance above."""
    want = x.double() @ w.double().t()
    scale = x.double().abs() @ w.double().abs().t()
    if bias is not None:
        want, scale = want + bias.double(), scale + bias.double().abs()
    err = (got.double().cpu() - want.cpu()).abs()
    assert bool((err <= 1e-5 * scale.cpu() + 1e-30).all()), float((err - 1e-5 * scale.cpu()).max())


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("vdtype", [torch.float32, torch.bfloat16, torch.int8], ids=str)
def test_sparse_linear_matches_float64(backend, gen, shape, vdtype):
    rows, cols, batch = shape
    for sparsity in SPARSITIES if rows * cols < 10**6 else [0.999]:
        w = sparse_weight(rows, cols, sparsity, gen, torch.float32 if vdtype == torch.int8 else vdtype)
        w[rows // 2:rows // 2 + 1] = 0  # a row with no nonzeros
        sw = fd.SparseWeight.from_dense(w.to(backend), vdtype)
        w = sw.to_dense()  # the stored weight (int8: dequantized)
        x = torch.randn(batch, cols, generator=gen).to(backend)
        bias = torch.randn(rows, generator=gen).to(backend)
        check_close(fd.sparse_linear(x, sw), w, x)
        check_close(fd.sparse_linear(x, sw, bias), w, x, bias)
        check_close(fd.spmm(sw, x.t().contiguous()).t(), w, x)


@pytest.mark.parametrize("vdtype", [torch.float32, torch.int8], ids=str)
def test_layouts_and_kinds(backend, gen, vdtype):
    sw = fd.SparseWeight.from_dense(sparse_weight(24, 40, 0.8, gen).to(backend), vdtype)
    w = sw.to_dense()
    base = torch.randn(40, 60, generator=gen).to(backend)
    for x in (base.t(), base.t()[::3], base[:, ::2].t()):  # non-contiguous activations
        check_close(fd.sparse_linear(x, sw), w, x)
        check_close(fd.spmm(sw, x.t()).t(), w, x)
    x3 = torch.randn(2, 3, 40, generator=gen).to(backend)  # leading batch dims
    out = fd.sparse_linear(x3, sw)
    assert out.shape == (2, 3, 24)
    check_close(out.reshape(6, 24), w, x3.reshape(6, 40))
    vec = torch.randn(40, generator=gen).to(backend)  # spmm of a vector
    assert fd.spmm(sw, vec).shape == (24,)
    check_close(fd.spmm(sw, vec)[None], w, vec[None])
    if backend == "cpu":  # numpy in, numpy out
        got = fd.sparse_linear(base.t().numpy(), sw)
        assert isinstance(got, np.ndarray)
        check_close(torch.from_numpy(got), w, base.t())


def test_bad_components_raise(backend):
    x = torch.ones(2, 10, device=backend)
    indptr = torch.tensor([0, 2, 3], device=backend)
    vals = torch.ones(3, device=backend)
    for idx in (torch.tensor([1, 10, 2], dtype=torch.int16), torch.tensor([1, -1, 2], dtype=torch.int32)):
        with pytest.raises(ValueError, match="out of range"):
            _ops.sparse_linear(x, indptr, idx.to(backend), vals, 10, None)
        with pytest.raises(ValueError, match="out of range"):
            _ops.spmm(indptr, idx.to(backend), vals, 10, x.t().contiguous())
    ok = torch.tensor([1, 2, 3], dtype=torch.int16, device=backend)
    for bad in ([0, 3, 2], [1, 2, 3], [0, 2, 4]):
        with pytest.raises(ValueError, match="indptr"):
            _ops.sparse_linear(x, torch.tensor(bad, device=backend), ok, vals, 10, None)


def test_public_argument_errors(gen):
    sw = fd.SparseWeight.from_dense(sparse_weight(4, 6, 0.5, gen))
    with pytest.raises(ValueError, match="x: expected shape"):
        fd.sparse_linear(torch.ones(2, 5), sw)
    with pytest.raises(ValueError, match="x: expected shape"):
        fd.spmm(sw, torch.ones(5, 2))
    with pytest.raises(ValueError, match="bias"):
        fd.sparse_linear(torch.ones(2, 6), sw, torch.ones(3))
    with pytest.raises(TypeError, match="w_sparse"):
        fd.sparse_linear(torch.ones(2, 6), torch.ones(4, 6))
    with pytest.raises(TypeError, match="x"):
        fd.sparse_linear(torch.ones(2, 6, dtype=torch.int32), sw)


def test_bad_scale_raises(backend):
    """int8 values need a float32 scale of one entry per row, float values none: the ops of every backend check."""
    x = torch.ones(2, 10, device=backend)
    indptr = torch.tensor([0, 2, 3], device=backend)
    idx = torch.tensor([1, 4, 2], dtype=torch.int16, device=backend)
    codes = torch.tensor([3, -127, 0], dtype=torch.int8, device=backend)
    for scale, err in ((None, ValueError), (torch.ones(3), ValueError), (torch.ones(2, 1), ValueError),
                       (torch.ones(2, dtype=torch.float64), TypeError)):
        scale = None if scale is None else scale.to(backend)
        with pytest.raises(err, match="scale"):
            _ops.sparse_linear(x, indptr, idx, codes, 10, None, scale)
        with pytest.raises(err, match="scale"):
            _ops.spmm(indptr, idx, codes, 10, x.t().contiguous(), scale)
    with pytest.raises(ValueError, match="scale"):
        _ops.sparse_linear(x, indptr, idx, codes.float(), 10, None, torch.ones(2, device=backend))
    got = _ops.sparse_linear(x, indptr, idx, codes, 10, None, torch.tensor([0.5, 2.0], device=backend))
    assert torch.equal(got.cpu(), torch.tensor([[-62.0, 0.0], [-62.0, 0.0]]))  # small integers: exact


def test_opcheck(gen):
    sw = fd.SparseWeight.from_dense(sparse_weight(9, 20, 0.7, gen))
    q = fd.SparseWeight.from_dense(sparse_weight(9, 20, 0.7, gen), torch.int8)
    x, b = torch.randn(5, 20, generator=gen), torch.randn(9, generator=gen)
    torch.library.opcheck(_ops.sparse_linear, (x, sw.indptr, sw.indices, sw.values, 20, b))
    torch.library.opcheck(_ops.sparse_linear, (x, sw.indptr, sw.indices, sw.values, 20, None))
    torch.library.opcheck(_ops.sparse_linear, (x.clone().requires_grad_(), sw.indptr, sw.indices, sw.values, 20, b))
    torch.library.opcheck(_ops.spmm, (sw.indptr, sw.indices, sw.values, 20, x.t().contiguous()))
    torch.library.opcheck(_ops.sparse_linear, (x.clone().requires_grad_(), q.indptr, q.indices, q.values, 20, b,
                                               q.scale))
    torch.library.opcheck(_ops.spmm, (q.indptr, q.indices, q.values, 20, x.t().contiguous(), q.scale))


def test_int8_gradient_to_input(gen):
    q = fd.SparseWeight.from_dense(sparse_weight(12, 30, 0.7, gen), torch.int8)
    x = torch.randn(5, 30, generator=gen, requires_grad=True)
    g = torch.randn(5, 12, generator=gen)
    (fd.sparse_linear(x, q) * g).sum().backward()
    want = g.double() @ q.to_dense().double()
    assert torch.allclose(x.grad.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_sparse_weight_round_trip(gen, dtype):
    w = sparse_weight(50, 70, 0.9, gen, dtype)
    w[3] = 0  # an empty row
    w[0, 0] = float("nan")  # NaN is stored, not dropped
    sw = fd.SparseWeight.from_dense(w)
    assert sw.values.dtype == (torch.bfloat16 if dtype == torch.bfloat16 else torch.float32)
    assert sw.indices.dtype == torch.int16 and sw.indptr.dtype == torch.int64
    assert sw.nnz == int((w != 0).sum())
    dense = sw.to_dense()
    assert torch.equal(dense.to(dtype).view(torch.int16 if dtype != torch.float32 else torch.int32),
                       w.view(torch.int16 if dtype != torch.float32 else torch.int32))
    assert sw.nbytes == 51 * 8 + sw.nnz * (2 + sw.values.element_size())
    again = fd.SparseWeight.from_state_dict(sw.state_dict())
    assert again.shape == sw.shape and torch.equal(again.to_dense().view(torch.uint8), dense.view(torch.uint8))
    assert sw.to("cpu") is sw


def test_sparse_weight_index_width_and_signs(gen):
    w = torch.zeros(2, 65536)
    w[0, 65535], w[1, 40000], w[1, 7] = 1.5, -2.0, -0.0  # unsigned 16-bit columns; -0.0 is not stored
    sw = fd.SparseWeight.from_dense(w)
    assert sw.indices.dtype == torch.int16 and sw.nnz == 2
    assert torch.equal(sw.to_dense(), w)
    x = torch.randn(3, 65536, generator=gen)
    check_close(fd.sparse_linear(x, sw), w, x)
    wide = fd.SparseWeight.from_dense(torch.zeros(2, 65537))
    assert wide.indices.dtype == torch.int32
    with pytest.raises(TypeError, match="float64"):
        fd.SparseWeight.from_dense(torch.zeros(2, 2, dtype=torch.float64))
    assert fd.SparseWeight.from_dense(torch.ones(2, 2, dtype=torch.float64), torch.float32).nnz == 4
    with pytest.raises(ValueError, match="2-D"):
        fd.SparseWeight.from_dense(torch.ones(3))
    bad = sw.state_dict()
    bad["indices"] = torch.tensor([1, 2], dtype=torch.int32)
    with pytest.raises(TypeError, match="indices"):
        fd.SparseWeight.from_state_dict(bad)


def test_int8_quantization(gen):
    w = sparse_weight(40, 70, 0.9, gen)
    w[3] = 0  # an empty row
    w[5, :] = 0
    w[5, 2], w[5, 9], w[5, 11] = 1.0, 1e-4, -1.0  # 1e-4 quantizes to code 0 and is still stored
    w[7, :] = 0
    w[7, 0] = 1e-44  # a subnormal row: its scale underflows to 0
    q = fd.SparseWeight.from_dense(w, torch.int8)
    assert q.values.dtype == torch.int8 and q.dtype == torch.int8 and q.scale.dtype == torch.float32
    assert q.scale.shape == (40,) and q.scale[3] == 0 and q.scale[7] == 0
    same = fd.SparseWeight.from_dense(w)
    assert torch.equal(q.indptr, same.indptr) and torch.equal(q.indices, same.indices)  # pattern kept exactly
    assert int(q.values.abs().max()) == 127 and int(q.values.min()) >= -127
    assert q.values[q.indptr[5] + 1] == 0
    assert torch.equal(q.scale, w.abs().amax(dim=1) / 127)
    dense = q.to_dense()
    assert dense.dtype == torch.float32 and bool((dense[3] == 0).all())
    err = (dense - w).abs()
    assert bool((err <= q.scale[:, None] * (0.5 + 1e-5) + 1e-38).all())  # the bound, + fp32 rounding of the product
    assert q.nbytes == 41 * 8 + q.nnz * 3 + 40 * 4
    again = fd.SparseWeight.from_state_dict(q.state_dict())
    assert torch.equal(again.values, q.values) and torch.equal(again.scale, q.scale)
    assert "scale" not in same.state_dict() and "scale" in repr(q) and q.to("cpu") is q
    assert fd.SparseWeight.from_dense(w.double(), torch.int8).nnz == q.nnz
    assert fd.SparseWeight.from_dense(torch.zeros(3, 0), torch.int8).scale.shape == (3,)
    bad = w.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        fd.SparseWeight.from_dense(bad, torch.int8)
    with pytest.raises(TypeError, match="dtype"):
        fd.SparseWeight.from_dense(w, torch.float16)


def test_int8_constructor_checks_scale(gen):
    q = fd.SparseWeight.from_dense(sparse_weight(6, 9, 0.5, gen), torch.int8)
    parts = (q.indptr, q.indices, q.values, q.shape)
    for scale, err in ((None, ValueError), (torch.ones(5), ValueError), (torch.ones(6, dtype=torch.float16), TypeError),
                       (torch.full((6,), float("nan")), ValueError), (np.ones(6, np.float32), TypeError)):
        with pytest.raises(err, match="scale"):
            fd.SparseWeight(*parts, scale)
    with pytest.raises(ValueError, match="scale"):
        fd.SparseWeight(q.indptr, q.indices, q.values.float(), q.shape, q.scale)
    with pytest.raises(TypeError, match="values"):
        fd.SparseWeight(q.indptr, q.indices, q.values.to(torch.int16), q.shape)


def test_eager_path_matches_custom_op(gen):
    """Eager calls without a gradient skip the custom op's dispatcher; they must give the op's bits exactly, and a
    gradient-needing call still goes through the op (it has a grad_fn)."""
    q = fd.SparseWeight.from_dense(sparse_weight(16, 24, 0.8, gen), torch.int8)
    x, b = torch.randn(3, 24, generator=gen), torch.randn(16, generator=gen)
    want = _ops.sparse_linear(x, q.indptr, q.indices, q.values, 24, b, q.scale)
    assert torch.equal(fd.sparse_linear(x, q, b), want)
    assert torch.equal(fd.spmm(q, x.t()), _ops.spmm(q.indptr, q.indices, q.values, 24, x.t().contiguous(), q.scale))
    assert fd.sparse_linear(x.clone().requires_grad_(), q).grad_fn is not None
    with torch.no_grad():
        assert fd.sparse_linear(x.clone().requires_grad_(), q).grad_fn is None


@pytest.mark.parametrize("gather_max_batch", [0, 1, 8])
@pytest.mark.parametrize("vdtype", [torch.float32, torch.bfloat16, torch.int8], ids=str)
def test_native_gather_and_tile_kernels(backend, gen, gather_max_batch, vdtype):
    """The native backend picks gather or tiled kernels by a measured batch size: both, forced, at every batch the
    measurement may assign to either (0: all tiled, 8: gather up to 8 samples), sample- and feature-major."""
    if fd.get_backend() != "native":
        pytest.skip("native kernels only")
    from fastdistill import _C

    sw = fd.SparseWeight.from_dense(sparse_weight(37, 70, 0.7, gen, torch.float32 if vdtype == torch.int8 else vdtype),
                                    vdtype)
    w = sw.to_dense()
    scale = None if sw.scale is None else sw.scale.numpy()
    for m in range(1, 10):
        x = torch.randn(m, 70, generator=gen)
        out = np.empty((m, 37), np.float32)
        vals = sw.values.view(torch.uint16) if vdtype == torch.bfloat16 else sw.values
        _C.sparse_matmul(sw.indptr.numpy(), sw.indices.numpy(), vals.numpy(), 70, x.numpy(), False, out, False,
                         scale=scale, nthreads=2, gather_max_batch=gather_max_batch)
        check_close(torch.from_numpy(out), w, x)
        out_t = np.empty((37, m), np.float32)
        _C.sparse_matmul(sw.indptr.numpy(), sw.indices.numpy(), vals.numpy(), 70, x.t().contiguous().numpy(), True,
                         out_t, True, scale=scale, nthreads=2, gather_max_batch=gather_max_batch)
        check_close(torch.from_numpy(out_t).t(), w, x)
