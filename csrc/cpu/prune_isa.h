// Declarations of the per-ISA leaf kernels of pruning (defined by prune_kernels.h, compiled once per ISA) and the
// table that selects one set at run time.
#pragma once
#include "common.h"

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

#define FD_DECLARE_PRUNE_LEAVES(NS)                                               \
  namespace NS {                                                                  \
  void hist_hi(const void*, int64_t, DType, uint32_t*);                           \
  void hist_lo(const void*, int64_t, DType, uint32_t, uint32_t*);                 \
  int64_t count_nan(const void*, int64_t, DType);                                 \
  int64_t write_mask(void*, int64_t, DType, uint32_t, uint8_t*, bool);            \
  void prune_ties(void*, int64_t, DType, uint32_t, int64_t, uint8_t*, bool);      \
  void nm_mask(const void*, int64_t, int64_t, int64_t, DType, uint8_t*);          \
  void sample_keys(const void*, int64_t, int64_t, DType, uint32_t*);               \
  int64_t collect(const void*, int64_t, DType, uint32_t, uint32_t, uint32_t*, int64_t, int64_t*, int64_t*); \
  inline PruneLeaves leaves() { return {hist_hi, hist_lo, count_nan, write_mask, prune_ties, nm_mask, sample_keys, collect}; } \
  }
FD_DECLARE_PRUNE_LEAVES(scalar)
FD_DECLARE_PRUNE_LEAVES(avx2)
FD_DECLARE_PRUNE_LEAVES(avx512)
#undef FD_DECLARE_PRUNE_LEAVES

inline PruneLeaves prune_leaves() {
  switch (simd_level()) {
    case Simd::Avx512: return avx512::leaves();
    case Simd::Avx2: return avx2::leaves();
    default: return scalar::leaves();
  }
}
}  // namespace fd
