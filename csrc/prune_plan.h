// Selection bookkeeping shared by the CPU (prune.cpp) and CUDA (prune.cu) magnitude-pruning orchestration.
#pragma once
#include <cstdint>
#include <string>

namespace fd {

// The k-th smallest magnitude key and how many keys are below / equal to it.
struct Selection {
  uint32_t key = 0;
  int64_t less = 0;
  int64_t equal = 0;
};

// How the mask pass uses a selection: keep keys >= lo, then prune the first `tie_prune` keys == lo in index order.
struct MaskPlan {
  uint32_t lo;
  int64_t tie_prune;
};

inline MaskPlan plan_mask(int64_t k, int64_t total, const Selection& sel) {
  if (k == 0) return {0u, 0};
  if (k == total) return {0xffffffffu, 0};  // keys have 31 bits: all below
  const int64_t tie = k - sel.less;
  return tie == sel.equal ? MaskPlan{sel.key + 1, 0} : MaskPlan{sel.key, tie};
}

inline std::string nan_message(uint64_t nans) {
  return "x contains " + std::to_string(nans) + " NaN value(s); magnitude pruning needs finite or infinite values";
}

}  // namespace fd
