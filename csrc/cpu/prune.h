// Magnitude pruning and N:M masks over raw buffers: the drivers of csrc/cpu/prune.cpp (plain C++; bad data throws
// std::invalid_argument).
#pragma once
#include <cstdint>
#include <vector>

#include "core.h"
#include "prune_plan.h"

namespace fd {

struct PruneArray {
  char* data;     // n elements of dtype
  int64_t n;
  DType dtype;
  uint8_t* mask;  // n keep-flags to write, or null
};

// Selects the k smallest magnitudes over all arrays (ties in array order, then index order) and, when write_masks
// (every array has a mask) or inplace is set, writes the keep-masks and/or zeroes the pruned elements. Returns the
// k-th smallest magnitude's key with how many keys are below / equal to it (all 0 when k == 0).
// Throws for k outside [0, total] or a NaN.
Selection magnitude_prune(const std::vector<PruneArray>& arrays, int64_t k, bool write_masks, bool inplace,
                          int nthreads);

// Keep-mask of the n largest magnitudes of each contiguous group of m elements of x (size elements; ties keep the
// lower index). Throws for m outside [1, 64], n outside [0, m], size not a multiple of m, or a NaN.
void nm_mask(const void* x, DType dtype, int64_t size, int64_t n, int64_t m, uint8_t* mask, int nthreads);

}  // namespace fd
