// The leaf kernels of pruning (defined by prune_kernels.h, compiled once per SIMD tier; see core.h).
#pragma once
#include "core.h"

namespace fd {
// Radix-select histogram layout shared by the leaves and the orchestration: the 31-bit magnitude key splits into
// key >> 16 (kHiBins) and key & 0xffff (kLoBins).
constexpr int kHiBins = 1 << 15;
constexpr int kLoBins = 1 << 16;

struct PruneLeaves {
  void (*hist_hi)(const void*, int64_t, DType, uint32_t*);
  void (*hist_lo)(const void*, int64_t, DType, uint32_t, uint32_t*);
  int64_t (*count_nan)(const void*, int64_t, DType);
  int64_t (*write_mask)(void*, int64_t, DType, uint32_t, uint8_t*, bool);
  void (*prune_ties)(void*, int64_t, DType, uint32_t, int64_t, uint8_t*, bool);
  void (*nm_mask)(const void*, int64_t, int64_t, int64_t, DType, uint8_t*);
  void (*sample_keys)(const void*, int64_t, int64_t, DType, uint32_t*);
  int64_t (*collect)(const void*, int64_t, DType, uint32_t, uint32_t, uint32_t*, int64_t, int64_t*, int64_t*);
};

FD_DECLARE_TIER_LEAVES(PruneLeaves)
}  // namespace fd
