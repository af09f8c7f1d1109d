// int4 linear leaves: the table of per-tier kernels (defined by int4_kernels.h, compiled once per SIMD tier; see
// core.h). A leaf multiplies a block of rows by one packed panel (int4.h) and stores the finished outputs.
#pragma once
#include <vector>

#include "cpu/int4.h"

namespace fd {
struct Int4Panel {
  const uint8_t* codes;  // the panel's codes: k/4 groups of kInt4GroupBytes
  const float* scales;   // the panel's scales: groups x 64
  int64_t groups;        // scale groups (k / g)
  int64_t gk;            // groups of 4 k per scale group (g / 4)
  int64_t col0, ncols;   // output columns col0 .. col0 + ncols (ncols <= 64)
};

struct Int4Out {
  float* out;
  int64_t ldo;
  const float* row_scale;  // W4A8: per-row activation scales (indexed by the absolute row); null for W4A16
  const float* bias;       // per column, or null
};

struct Int4Leaves {
  // W4A8: rows [row0, row0 + rows) of q (int8, row stride ldq, pointing at row row0) with corr (rows x groups:
  // 8 * the sum of q over each group, what the unsigned fields add) times the panel.
  void (*a8_rows)(const int8_t* q, int64_t ldq, const int32_t* corr, int64_t rows, int64_t row0, const Int4Panel& p,
                  const Int4Out& o);
  // W4A16: rows [row0, row0 + rows) of x (fp32, row stride ldx, pointing at row row0) times the panel.
  void (*a16_rows)(const float* x, int64_t ldx, int64_t rows, int64_t row0, const Int4Panel& p, const Int4Out& o);
};

FD_DECLARE_TIER_LEAVES(Int4Leaves)
}  // namespace fd
