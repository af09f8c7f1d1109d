// The leaf kernels of sparse (CSR) matmul (defined by sparse_kernels.h, compiled once per SIMD tier; see core.h)
// and the CSR matrix they read.
#pragma once
#include <type_traits>

#include "core.h"

namespace fd {
// Stored value types: fp32, bf16 bits, or int8 codes with one fp32 scale per row (W[n, c] = scale[n] * code).
enum class Val : int { F32, BF16, I8 };

// One CSR matrix (rows = output features). Column indices are uint16 (stored in an int16 array) or int32.
struct Csr {
  const int64_t* indptr;
  const void* indices;
  const void* values;
  const float* scale;  // rows entries when vals == Val::I8, else nullptr
  int64_t rows, cols, nnz;  // nnz: number of stored values (indptr[rows] must equal it)
  bool idx16;
  Val vals;
};

// Output element (m, n) lives at out[m * om + n * on].
struct OutView {
  float* data;
  int64_t om, on;
};

// Every leaf handles rows [r0, r1) and returns whether it met a column index >= cols (such indices are clamped
// to cols - 1 so memory stays in bounds; the caller raises after the pass).
struct SparseLeaves {
  int lanes;  // floats per vector register; a batch tile holds nv * lanes columns, nv in [1, kMaxVectors]
  // y[m, n] = bias[n] + sum_j W[n, j] x[m, j] for m < M (M small); x row-major (M, cols).
  bool (*gather_rows)(const Csr&, const float* x, int64_t M, const float* bias, OutView out, int64_t r0, int64_t r1);
  // Same over one batch tile: xp is (cols, nv * lanes) with the tile's columns contiguous; writes mcount columns.
  bool (*tile_rows)(const Csr&, const float* xp, int nv, int64_t mcount, const float* bias, OutView out, int64_t r0,
                    int64_t r1);
};
// Widest batch tile in registers. Each nonzero streams one tile row of packed x from L2, so the packed tile
// (cols x kMaxVectors x lanes floats: 1 MiB for 4096 inputs on AVX-512) must stay in L2: at 4096x4096, 0.9
// sparsity, M = 256, one thread, 4 registers took 21 ms and 8 registers (a 2 MiB tile) 25-30 ms.
constexpr int kMaxVectors = 4;

FD_DECLARE_TIER_LEAVES(SparseLeaves)
}  // namespace fd
