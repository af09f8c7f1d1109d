// Leaf kernel of Wanda masks, written once as plain loops that the compiler vectorizes per SIMD tier
// (wanda_scalar.cpp, x86/wanda_avx2.cpp, x86/wanda_avx512.cpp; see core.h).
//
// Per row, the score |w| * norm is computed in the same pass that stores its *key* (its fp32 bit pattern: for
// non-negative floats the unsigned order is the numeric order, NaNs above +inf). Selection of the k lowest keys is
// exact and O(cols): a histogram of key >> 20 over the occupied bins finds the bin holding the k-th key; keys below
// it are pruned, above it kept (one vector pass that also packs the columns of the keys in that bin: AVX-512
// compress, an AVX2 permutation table), and the few in it are ordered by (key, column) (ties: lower column first).
// Measured, one thread, 1536 x 384 fp32, in a loop: 0.66 ns per element at avx512, 0.70 at avx2 (1.36 before the
// vector pass and the interleaved histograms); a magnitude mask of the same tensor: 0.45 / 0.64 ns.
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

#if FD_TIER == FD_TIER_AVX2
// For each 8-bit mask, the lane order that moves the set lanes to the front (AVX2 has no compress instruction).
struct CompressTable {
  int32_t perm[256][8];
  CompressTable() {
    for (int m = 0; m < 256; ++m) {
      int j = 0;
      for (int b = 0; b < 8; ++b)
        if (m >> b & 1) perm[m][j++] = b;
      for (; j < 8; ++j) perm[m][j] = 0;
    }
  }
};
#endif

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
  // Four interleaved histograms: equal bins of nearby keys would chain increments through one counter (store
  // forwarding, ~5 cycles each); apart they overlap.
  const uint32_t b0 = kmin >> 20, nbins = (kmax >> 20) - b0 + 1;
  uint32_t* h[4] = {hist, hist + nbins, hist + 2 * nbins, hist + 3 * nbins};
  std::memset(hist, 0, 4 * nbins * sizeof(uint32_t));
  const int64_t whole = cols & ~int64_t{3};
  for (int64_t i = 0; i < whole; i += 4) {
    ++h[0][(keys[i] >> 20) - b0];
    ++h[1][(keys[i + 1] >> 20) - b0];
    ++h[2][(keys[i + 2] >> 20) - b0];
    ++h[3][(keys[i + 3] >> 20) - b0];
  }
  for (int64_t i = whole; i < cols; ++i) ++h[0][(keys[i] >> 20) - b0];
  int64_t below = 0;
  uint32_t b = 0;
  for (;; ++b) {
    const int64_t c = int64_t{h[0][b]} + h[1][b] + h[2][b] + h[3][b];
    if (below + c >= k) break;
    below += c;
  }
  const uint32_t bin = b + b0;
  int64_t n = 0;
  uint32_t* idx = reinterpret_cast<uint32_t*>(cand) + cols;  // the candidates' columns, in cand's upper half
#if FD_TIER == FD_TIER_AVX512
  int64_t i = 0;
  const __m512i vbin = _mm512_set1_epi32(static_cast<int>(bin));
  __m512i col = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (; i + 16 <= cols; i += 16) {
    const __m512i kb = _mm512_srli_epi32(_mm512_loadu_si512(keys + i), 20);
    const __mmask16 keep = _mm512_cmpgt_epu32_mask(kb, vbin), in = _mm512_cmpeq_epi32_mask(kb, vbin);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(mask + i), _mm_maskz_set1_epi8(keep, 1));
    _mm512_storeu_si512(idx + n, _mm512_maskz_compress_epi32(in, col));
    n += __builtin_popcount(in);
    col = _mm512_add_epi32(col, _mm512_set1_epi32(16));
  }
  for (; i < cols; ++i) {
    mask[i] = (keys[i] >> 20) > bin;
    idx[n] = static_cast<uint32_t>(i);
    n += (keys[i] >> 20) == bin;
  }
#elif FD_TIER == FD_TIER_AVX2
  // 8 keys at a time; the in-bin columns are packed with a permutation looked up by the comparison's bit mask.
  static const CompressTable table;
  int64_t i = 0;
  const __m256i vbin = _mm256_set1_epi32(static_cast<int>(bin));  // bins < 2048: a signed compare is exact
  __m256i col = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (; i + 8 <= cols; i += 8) {
    const __m256i kb = _mm256_srli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(keys + i)), 20);
    const __m256i keep = _mm256_cmpgt_epi32(kb, vbin);
    const int in = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(kb, vbin)));
    const __m256i bytes = _mm256_and_si256(keep, _mm256_set1_epi32(1));
    const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256(bytes, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(mask + i), _mm_packus_epi16(w16, w16));
    const __m256i perm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table.perm[in]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + n), _mm256_permutevar8x32_epi32(col, perm));
    n += __builtin_popcount(static_cast<unsigned>(in));
    col = _mm256_add_epi32(col, _mm256_set1_epi32(8));
  }
  for (; i < cols; ++i) {
    mask[i] = (keys[i] >> 20) > bin;
    idx[n] = static_cast<uint32_t>(i);
    n += (keys[i] >> 20) == bin;
  }
#else
  for (int64_t i = 0; i < cols; ++i) {
    mask[i] = (keys[i] >> 20) > bin;
    idx[n] = static_cast<uint32_t>(i);
    n += (keys[i] >> 20) == bin;
  }
#endif
  for (int64_t j = 0; j < n; ++j) cand[j] = static_cast<uint64_t>(keys[idx[j]]) << 32 | idx[j];
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
