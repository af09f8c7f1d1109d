// int8 GEMM: the packed weight layout shared by every SIMD level, the epilogue a leaf applies to each output tile,
// and the table of per-ISA leaves (defined by int8_kernels.h, compiled once per ISA) chosen at run time.
#pragma once
#include "common.h"

namespace fd {
// B (K x N int8) is packed into panels of kPanel columns. Within a panel, for each group g of 4 consecutive k, the
// 4 bytes of each column are adjacent: packed[p][g][j][t] = B[4g + t][kPanel * p + j], zero-padded in k and n.
// One group of one panel is then exactly one 64-byte vector of VNNI operands (16 int32 lanes x 4 bytes), four per
// group, and 16 groups of 16 columns are one AMX B tile; K is padded to a multiple of 64 (16 groups) for the tiles.
// Every level reads this one layout, so a weight packed once serves whatever level runs later.
constexpr int64_t kPanel = 64;
constexpr int64_t kGroupBytes = kPanel * 4;

inline int64_t k_groups(int64_t k) { return (k + 63) / 64 * 16; }
// Rows of A the GEMM may read: whole 32-row AMX tiles (the buffers' extra rows are zero).
inline int64_t padded_rows(int64_t m) { return (m + 31) / 32 * 32; }
inline int64_t n_panels(int64_t n) { return (n + kPanel - 1) / kPanel; }

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
};

#define FD_DECLARE_INT8_LEAVES(NS)                                                                        \
  namespace NS {                                                                                          \
  void gemm_panel(const uint8_t*, int64_t, int64_t, const int8_t*, int64_t, int64_t, int64_t, int64_t,   \
                  const Int8Epilogue&);                                                                   \
  void quantize_rows(const void*, DType, int64_t, int64_t, uint8_t*, int64_t, int8_t*, float*);          \
  inline Int8Leaves int8_leaves() { return {gemm_panel, quantize_rows}; }                                 \
  }
FD_DECLARE_INT8_LEAVES(scalar)
FD_DECLARE_INT8_LEAVES(avx2)
FD_DECLARE_INT8_LEAVES(avx512)
#undef FD_DECLARE_INT8_LEAVES

namespace avx512 {
void store_tile_rows(const int32_t* tile, int64_t mr, int64_t row0, int64_t col0, int64_t ncols, const Int8Epilogue& e);
}
namespace amx {
bool available();  // CPU has AMX-INT8 and the OS granted this process the tile state
void gemm_panel(const uint8_t*, int64_t, int64_t, const int8_t*, int64_t, int64_t, int64_t, int64_t,
                const Int8Epilogue&);
}
bool int8_amx_enabled();  // AMX allowed (default; tests switch it off to reach the VNNI kernel)

inline bool cpu_has_vnni() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

// Below this many rows a 32-row AMX tile pass is mostly zero padding: VNNI measured faster up to 4-8 rows
// (M=1, 4096x1024: 0.10 vs 0.15 ms), AMX from 16 on (M=16: 0.18 vs 0.26 ms).
constexpr int64_t kAmxMinRows = 8;

// The avx512 level runs AMX tiles where available (for m >= kAmxMinRows rows), else VNNI (vpdpbusd); an AVX-512 CPU
// without VNNI runs the avx2 leaves.
inline Int8Leaves int8_leaves(int64_t m) {
  static const bool vnni = cpu_has_vnni();
  switch (simd_level()) {
    case Simd::Avx512:
      if (m >= kAmxMinRows && int8_amx_enabled() && amx::available()) return {amx::gemm_panel, avx512::quantize_rows};
      return vnni ? avx512::int8_leaves() : avx2::int8_leaves();
    case Simd::Avx2: return avx2::int8_leaves();
    default: return scalar::int8_leaves();
  }
}
}  // namespace fd
