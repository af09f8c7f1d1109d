// int8 GEMM leaves: the epilogue a leaf applies to each output tile, the GEMM microkernel families with the form of
// A each reads, and the table of per-tier leaves (defined by int8_kernels.h, compiled once per SIMD tier; see
// core.h), plus the AMX kernel of the avx512 tier.
#pragma once
#include <vector>

#include "cpu/int8.h"

namespace fd {
// A arrives prepared for the microkernel (Int8Gemm::prepare_row): int8, int16, or unsigned bytes a + 128 (what
// vpdpbusd multiplies; then comp[n] = 128 * sum_k B[k][n] removes the shift: sum_k a*b = sum_k (a+128)*b - comp[n]),
// rows of stride lda elements with a zero tail. All sums are int32 and wrap modulo 2^32, so the result is exact
// whenever the true product fits in int32.
//
// The epilogue turns a tile of int32 sums into the output: int32 (int8_mm) or, when out_f32 is set,
// float(sum) * row_scale[m] * col_scale[n] + bias[n] (int8_linear; bias may be null). comp is null for unshifted A.
struct Int8Epilogue {
  const int32_t* comp;
  int32_t* out_i32;
  float* out_f32;
  int64_t ldo;
  const float* row_scale;
  const float* col_scale;
  const float* bias;
};

// One GEMM microkernel family and the form of A it reads.
struct Int8Gemm {
  const char* name;
  int64_t a_elem;  // bytes of prepared A per element of A (a row takes lda * a_elem bytes)
  bool shifted;    // A holds a + 128 (u8) and the sums need comp
  bool in_place;   // the prepared row starts with the codes themselves: prepare_row may run with dst == a
  // k int8 values of one row of A -> the prepared row at dst (lda elements, zeros past k).
  void (*prepare_row)(const int8_t* a, int64_t k, void* dst, int64_t lda);
  // Rows [0, rows) of prepared A (stride lda elements) times one panel (kgroups groups): output rows row0..,
  // columns col0 .. col0 + ncols (ncols <= kPanel).
  void (*gemm_panel)(const void* a, int64_t lda, int64_t rows, const int8_t* panel, int64_t kgroups, int64_t row0,
                     int64_t col0, int64_t ncols, const Int8Epilogue& e);
};

struct Int8Leaves {
  Int8Gemm fast;   // for B within [-127, 127] (every symmetric weight; int8_mm where the pack saw no -128)
  Int8Gemm exact;  // for any B (the same family where `fast` is exact for -128 too)
  // Symmetric quantization of one row x (k fp32 or bf16 bits): scale = absmax / 127,
  // q = clamp(round_half_even(x / scale), -127, 127) (0 where scale is 0).
  void (*quantize_row)(const void* x, DType dt, int64_t k, int8_t* q, float* scale);
  // Tile (mr x kPanel int32 sums) -> output through the epilogue.
  void (*store_tile)(const int32_t* tile, int64_t mr, int64_t row0, int64_t col0, int64_t ncols,
                     const Int8Epilogue& e);
};

FD_DECLARE_TIER_LEAVES(Int8Leaves)

// Threads for a pass over the m x k activations: nthreads, or 1 below about 2^18 elements (int8.cpp says why).
int row_threads(int64_t m, int64_t k, int nthreads);

// The running tier's leaves (an AVX-512 CPU without VNNI gets the avx2 tier's); AMX is chosen apart (int8.cpp).
const Int8Leaves& int8_leaves();

// Bytes from one k element of a prepared row to the next: a form that starts with the codes holds them one byte
// each (what follows, such as the sign kernel's magnitudes, sits lda bytes later); the int16 form two.
inline int64_t a_k_bytes(const Int8Gemm& g) { return g.in_place ? 1 : g.a_elem; }

// The prepared copy of A: lda = 4 * kgroups elements per row; whole 32-row tiles (zero rows past m) for AMX, which
// loads them, just m rows otherwise.
struct PreparedA {
  std::vector<uint8_t> bytes;
  int64_t lda;
  PreparedA(const Int8Gemm& gemm, int64_t m, int64_t kgroups);
  void* row(const Int8Gemm& gemm, int64_t r) { return bytes.data() + r * lda * gemm.a_elem; }
};

// The int8 linear layer's first half, shared with int4's W4A8: x (m x k fp32 or bf16 bits) quantized per row
// (scales into rs) and prepared for `gemm` in ua.
void prepare_activations(const Int8Gemm& gemm, const void* x, DType dt, int64_t m, int64_t k, PreparedA& ua,
                         float* rs, int nthreads);

#if FD_X86
namespace amx {
bool available();          // CPU has AMX-INT8 and the OS granted this process the tile state
const Int8Gemm& gemm();    // tdpbusd tiles; A as the avx512 tier prepares it, padded to whole 32-row tiles
}  // namespace amx
#endif
}  // namespace fd
