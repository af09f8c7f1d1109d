// int8 GEMM leaves: the epilogue a leaf applies to each output tile and the table of per-tier leaves (defined by
// int8_kernels.h, compiled once per SIMD tier; see core.h), plus the AMX kernel of the avx512 tier.
#pragma once
#include "cpu/int8.h"

namespace fd {
// A arrives as unsigned bytes a + 128 (what vpdpbusd multiplies), with a row stride that is a multiple of 4 and a
// zero tail. comp[n] = 128 * sum_k B[k][n] removes the shift: sum_k a*b = sum_k (a+128)*b - comp[n]. All sums are
// int32 and wrap modulo 2^32, so the result is exact whenever the true product fits in int32.
//
// The epilogue turns a tile of int32 sums into the output: int32 (int8_mm) or, when out_f32 is set,
// float(sum) * row_scale[m] * col_scale[n] + bias[n] (int8_linear; bias may be null).
struct Int8Epilogue {
  const int32_t* comp;
  int32_t* out_i32;
  float* out_f32;
  int64_t ldo;
  const float* row_scale;
  const float* col_scale;
  const float* bias;
};

struct Int8Leaves {
  // Rows [0, rows) of A (u8, stride lda) times one panel (kgroups groups): output rows row0.., columns col0 ..
  // col0 + ncols (ncols <= kPanel).
  void (*gemm_panel)(const uint8_t* a, int64_t lda, int64_t rows, const int8_t* panel, int64_t kgroups,
                     int64_t row0, int64_t col0, int64_t ncols, const Int8Epilogue& e);
  // Symmetric per-row quantization of x (rows x k, fp32 or bf16 bits): scale = absmax / 127,
  // q = clamp(round_half_even(x / scale), -127, 127) (0 where scale is 0). Writes q + 128 as bytes to ua (stride lda,
  // zero tail up to lda) when ua is set, else q to sa (stride k); the scales to scales.
  void (*quantize_rows)(const void* x, DType dt, int64_t rows, int64_t k, uint8_t* ua, int64_t lda, int8_t* sa,
                        float* scales);
  // Tile (mr x kPanel int32 sums, before the shift compensation) -> output through the epilogue.
  void (*store_tile)(const int32_t* tile, int64_t mr, int64_t row0, int64_t col0, int64_t ncols,
                     const Int8Epilogue& e);
};

FD_DECLARE_TIER_LEAVES(Int8Leaves)

#if FD_X86
namespace amx {
bool available();  // CPU has AMX-INT8 and the OS granted this process the tile state
const Int8Leaves& leaves();  // the AMX GEMM with the avx512 tier's quantization and store
}  // namespace amx
#endif

// The leaves for a GEMM of m rows at the tier in use: at avx512, AMX tiles where available (m >= kAmxMinRows), else
// VNNI (vpdpbusd), and on an AVX-512 CPU without VNNI the avx2 leaves.
const Int8Leaves& int8_leaves(int64_t m);
}  // namespace fd
