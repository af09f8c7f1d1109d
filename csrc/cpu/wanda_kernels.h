// Leaf kernel of Wanda masks, written once as plain loops that the compiler vectorizes per SIMD tier
// (wanda_scalar.cpp, x86/wanda_avx2.cpp, x86/wanda_avx512.cpp; see core.h).
//
// Per row, the score |w| * norm is computed in the same pass that stores its *key* (its fp32 bit pattern: for
// non-negative floats the unsigned order is the numeric order, NaNs above +inf). Selection of the k lowest keys is
// exact and O(cols): a histogram of key >> 20 over the occupied bins finds the bin holding the k-th key; keys below
// it are pruned, above it kept, and the few in it are ordered by (key, column) (ties: lower column pruned first).
//
// Expects, before inclusion: "wanda_isa.h", then the tier header (FD_TIER, FD_TIER_NS, FD_TIER_SIMD).

namespace fd {
namespace FD_TIER_NS {

template <DType D>
static inline float load_weight(const void* w, int64_t i) {
  if constexpr (D == DType::F32) {
    return static_cast<const float*>(w)[i];
  } else {
    return __builtin_bit_cast(float, static_cast<uint32_t>(static_cast<const uint16_t*>(w)[i]) << 16);
  }
}

template <DType D>
static bool row_of(const void* w, const float* norms, int64_t cols, int64_t k, uint32_t* keys, uint32_t* hist,
                   uint64_t* cand, uint8_t* mask) {
  uint32_t kmin = 0xffffffffu, kmax = 0;
  for (int64_t i = 0; i < cols; ++i) {
    const uint32_t key = __builtin_bit_cast(uint32_t, std::fabs(load_weight<D>(w, i)) * norms[i]);
    keys[i] = key;
    kmin = key < kmin ? key : kmin;
    kmax = key > kmax ? key : kmax;
  }
  if (cols && kmax > 0x7f800000u) return false;
  if (k == 0 || k == cols) {
    std::memset(mask, k == 0 ? 1 : 0, static_cast<size_t>(cols));
    return true;
  }
  const uint32_t b0 = kmin >> 20, nbins = (kmax >> 20) - b0 + 1;
  std::memset(hist, 0, nbins * sizeof(uint32_t));
  for (int64_t i = 0; i < cols; ++i) ++hist[(keys[i] >> 20) - b0];
  int64_t below = 0;
  uint32_t b = 0;
  while (below + hist[b] < k) below += hist[b++];
  const uint32_t bin = b + b0;
  int64_t n = 0;
  for (int64_t i = 0; i < cols; ++i) {
    const uint32_t kb = keys[i] >> 20;
    mask[i] = kb > bin;
    if (kb == bin) cand[n++] = static_cast<uint64_t>(keys[i]) << 32 | static_cast<uint64_t>(i);
  }
  const int64_t prune = k - below;  // in [1, n]
  if (prune < n) std::nth_element(cand, cand + prune, cand + n);
  for (int64_t j = prune; j < n; ++j) mask[cand[j] & 0xffffffffu] = 1;
  return true;
}

static bool row(const void* w, DType dt, const float* norms, int64_t cols, int64_t k, uint32_t* keys, uint32_t* hist,
                uint64_t* cand, uint8_t* mask) {
  return dt == DType::F32 ? row_of<DType::F32>(w, norms, cols, k, keys, hist, cand, mask)
                          : row_of<DType::BF16>(w, norms, cols, k, keys, hist, cand, mask);
}

}  // namespace FD_TIER_NS

template <>
const WandaLeaves& tier_leaves<WandaLeaves, FD_TIER_SIMD>() {
  static constexpr WandaLeaves t{FD_TIER_NS::row};
  return t;
}
}  // namespace fd
