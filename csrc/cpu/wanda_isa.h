// Wanda leaves: the table of per-tier kernels (defined by wanda_kernels.h, compiled once per SIMD tier; see core.h).
#pragma once
#include "cpu/wanda.h"

namespace fd {
// Per-row scratch of the leaf: keys (cols uint32), hist (4 * kWandaBins uint32), cand (cols + 16 uint64).
constexpr int64_t kWandaBins = 2048;  // histogram bins: key >> 20 (the score's exponent and 3 mantissa bits)

struct WandaLeaves {
  // One row: writes its keep-mask; returns false for a NaN score (nothing written then).
  bool (*row)(const void* w, DType dt, const float* norms, int64_t cols, int64_t k, uint32_t* keys, uint32_t* hist,
              uint64_t* cand, uint8_t* mask);
};

FD_DECLARE_TIER_LEAVES(WandaLeaves)
}  // namespace fd
