// int4 linear leaves: the table of per-tier kernels (defined by int4_kernels.h, compiled once per SIMD tier; see
// core.h). A leaf multiplies a block of rows by one packed panel (int4.h) and stores the finished outputs.
#pragma once
#include <vector>

#include "cpu/int4.h"

namespace fd {
struct Int4Panel {
  const uint8_t* codes;  // the panel's codes: k/4 groups of kInt4GroupBytes
  const float* scales;   // the panel's scales: groups x 64
  const int32_t* comp;   // the panel's int8 GEMM shift compensation per group: groups x 64 (W4A8)
  int64_t groups;        // scale groups (k / g)
  int64_t gk;            // groups of 4 k per scale group (g / 4)
  int64_t col0, ncols;   // output columns col0 .. col0 + ncols (ncols <= 64)
};

struct Int4Out {
  float* out;
  int64_t ldo;
  const float* bias;  // per column, or null
};

struct Int4Leaves {
  // W4A8: kgroups groups of 4 k of packed codes (kInt4GroupBytes each) -> signed codes (fields - 8) as an int8
  // GEMM panel (int8.h: 256 bytes per group of 4 k).
  void (*unpack_codes)(const uint8_t* codes, int64_t kgroups, int8_t* dst);
  // W4A8: res (rows x 64 fp32) += float(tile) (rows x 64 int32 group sums) * scale (64 per-column group scales).
  void (*accumulate)(const int32_t* tile, int64_t rows, const float* scale, float* res);
  // W4A16: rows [row0, row0 + rows) of x (fp32, row stride ldx, pointing at row row0) times the panel.
  void (*a16_rows)(const float* x, int64_t ldx, int64_t rows, int64_t row0, const Int4Panel& p, const Int4Out& o);
};

FD_DECLARE_TIER_LEAVES(Int4Leaves)
}  // namespace fd
