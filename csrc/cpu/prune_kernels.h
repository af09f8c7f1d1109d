// Leaf kernels of magnitude pruning, written once as plain loops that the compiler vectorizes (plus AVX-512
// intrinsics where they pay). Compiled once per SIMD tier (prune_scalar.cpp, x86/prune_avx2.cpp,
// x86/prune_avx512.cpp; see core.h), so one binary carries every tier and picks one at run time.
//
// Elements are compared by their *magnitude key*: the fp32 bit pattern of |x| (sign bit cleared). For non-negative
// floats the unsigned order of the bit patterns is the numeric order, inf is 0x7f800000 and every NaN is above it.
// fp16 and bf16 are widened to the fp32 pattern exactly, so tensors of mixed dtypes share one key space.
//
// Expects, before inclusion: "prune_isa.h", then the tier header (FD_TIER, FD_TIER_NS, FD_TIER_SIMD).

namespace fd {
namespace FD_TIER_NS {

template <DType D> struct Storage;
template <> struct Storage<DType::F32> { using type = uint32_t; };
template <> struct Storage<DType::F16> { using type = uint16_t; };
template <> struct Storage<DType::BF16> { using type = uint16_t; };

template <DType D>
static inline uint32_t magnitude_key(typename Storage<D>::type bits) {
  if constexpr (D == DType::F32) {
    return bits & 0x7fffffffu;
  } else if constexpr (D == DType::BF16) {
    return static_cast<uint32_t>(bits & 0x7fffu) << 16;
  } else {
    // fp16 -> fp32 bit pattern, branch-free so it vectorizes. Subnormals go through an exact int->float
    // conversion (never through an fp32 denormal, which DAZ would flush).
    const uint32_t h = bits & 0x7fffu;
    const uint32_t normal = (h << 13) + 0x38000000u;
    const uint32_t sub = __builtin_bit_cast(uint32_t, static_cast<float>(static_cast<int32_t>(h)) * 0x1p-24f);
    const uint32_t infnan = (h << 13) | 0x7f800000u;
    return h < 0x400u ? sub : (h >= 0x7c00u ? infnan : normal);
  }
}

constexpr int64_t kBlock = 64;  // elements per vectorized block before a (rare) scalar follow-up

// Histograms: key >> 16 (kHiBins bins) over a range, and key & 0xffff (kLoBins bins) over the elements whose
// key >> 16 == hi.
//
// Zero keys (already-pruned weights) repeat in long runs, and increments chained through one counter wait on store
// forwarding (measured 2.4 ns each, 5x a spread-out increment). The AVX-512 versions therefore count zeros apart
// and compress-store the other bins of each group of 16 keys into a small buffer that is then counted (re-pruning a
// 90%-zero weight: 9.7 -> about 1 ms per 4M elements). The generic versions are plain loops: as fast on fresh
// weights, slower on mostly-zero ones.
#if FD_TIER == FD_TIER_AVX512
template <DType D>
static inline __m512i load_keys16(const typename Storage<D>::type* p) {
  if constexpr (D == DType::F32) {
    return _mm512_and_si512(_mm512_loadu_si512(p), _mm512_set1_epi32(0x7fffffff));
  } else if constexpr (D == DType::BF16) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_slli_epi32(_mm512_and_si512(w, _mm512_set1_epi32(0x7fff)), 16);
  } else {  // fp16 -> fp32 conversion is exact (fp16 subnormals become fp32 normals)
    const __m512 f = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_and_si512(_mm512_castps_si512(f), _mm512_set1_epi32(0x7fffffff));
  }
}

static inline void count_bins(const uint32_t* buf, int64_t j, uint32_t* hist) {
  int64_t t = 0;
  for (; t + 4 <= j; t += 4) {
    const uint32_t a = buf[t], b = buf[t + 1], c = buf[t + 2], d = buf[t + 3];
    ++hist[a]; ++hist[b]; ++hist[c]; ++hist[d];
  }
  for (; t < j; ++t) ++hist[buf[t]];
}

constexpr int64_t kGroup = 256;

template <DType D>
static void hist_hi_t(const void* data, int64_t n, uint32_t* hist) {
  const auto* p = static_cast<const typename Storage<D>::type*>(data);
  alignas(64) uint32_t buf[kGroup];
  uint32_t zeros = 0;
  int64_t i = 0;
  for (; i + kGroup <= n; i += kGroup) {
    uint32_t* q = buf;
    for (int64_t v = 0; v < kGroup; v += 16) {
      const __m512i k = load_keys16<D>(p + i + v);
      const __mmask16 nonzero = _mm512_test_epi32_mask(k, k);
      _mm512_mask_compressstoreu_epi32(q, nonzero, _mm512_srli_epi32(k, 16));
      q += __builtin_popcount(nonzero);
    }
    zeros += static_cast<uint32_t>(kGroup - (q - buf));
    count_bins(buf, q - buf, hist);
  }
  for (; i < n; ++i) ++hist[magnitude_key<D>(p[i]) >> 16];
  hist[0] += zeros;
}

template <DType D>
static void hist_lo_t(const void* data, int64_t n, uint32_t hi, uint32_t* hist) {
  const auto* p = static_cast<const typename Storage<D>::type*>(data);
  alignas(64) uint32_t buf[kGroup];
  const __m512i want = _mm512_set1_epi32(static_cast<int>(hi));
  const __m512i low = _mm512_set1_epi32(0xffff);
  uint32_t zeros = 0;
  int64_t i = 0;
  for (; i + kGroup <= n; i += kGroup) {
    uint32_t* q = buf;
    for (int64_t v = 0; v < kGroup; v += 16) {
      const __m512i k = load_keys16<D>(p + i + v);
      const __mmask16 match = _mm512_cmpeq_epi32_mask(_mm512_srli_epi32(k, 16), want);
      if (!match) continue;
      const __mmask16 nonzero = _mm512_mask_test_epi32_mask(match, k, k);
      _mm512_mask_compressstoreu_epi32(q, nonzero, _mm512_and_si512(k, low));
      q += __builtin_popcount(nonzero);
      zeros += __builtin_popcount(match & ~nonzero);
    }
    count_bins(buf, q - buf, hist);
  }
  for (; i < n; ++i) {
    const uint32_t k = magnitude_key<D>(p[i]);
    if ((k >> 16) == hi) ++hist[k & 0xffffu];
  }
  hist[0] += zeros;
}
#else
template <DType D>
static void hist_hi_t(const void* data, int64_t n, uint32_t* hist) {
  const auto* p = static_cast<const typename Storage<D>::type*>(data);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const uint32_t a = magnitude_key<D>(p[i]) >> 16, b = magnitude_key<D>(p[i + 1]) >> 16;
    const uint32_t c = magnitude_key<D>(p[i + 2]) >> 16, d = magnitude_key<D>(p[i + 3]) >> 16;
    ++hist[a]; ++hist[b]; ++hist[c]; ++hist[d];
  }
  for (; i < n; ++i) ++hist[magnitude_key<D>(p[i]) >> 16];
}

template <DType D>
static void hist_lo_t(const void* data, int64_t n, uint32_t hi, uint32_t* hist) {
  const auto* p = static_cast<const typename Storage<D>::type*>(data);
  for (int64_t b = 0; b < n; b += kBlock) {  // a vectorized test per block first: matches are usually rare
    const int64_t e = b + kBlock < n ? b + kBlock : n;
    uint32_t hits = 0;
    for (int64_t i = b; i < e; ++i) hits |= (magnitude_key<D>(p[i]) >> 16) == hi;
    if (!hits) continue;
    for (int64_t i = b; i < e; ++i) {
      const uint32_t k = magnitude_key<D>(p[i]);
      if ((k >> 16) == hi) ++hist[k & 0xffffu];
    }
  }
}
#endif

// out[i] = key of element i * stride, for i < count (the sample that brackets the k-th key; see prune.cpp).
template <DType D>
static void sample_keys_t(const void* data, int64_t stride, int64_t count, uint32_t* out) {
  const auto* p = static_cast<const typename Storage<D>::type*>(data);
  for (int64_t i = 0; i < count; ++i) out[i] = magnitude_key<D>(p[i * stride]);
}

// One read pass for the sampled bracket [lo, hi]: counts keys < lo and NaNs, and copies the keys in [lo, hi] to out
// (capacity cap). Returns how many were copied, or -1 once more than cap would be (the caller falls back).
#if FD_TIER == FD_TIER_AVX512
template <DType D>
static int64_t collect_t(const void* data, int64_t n, uint32_t lo, uint32_t hi, uint32_t* out, int64_t cap,
                         int64_t* below, int64_t* nans) {
  const auto* p = static_cast<const typename Storage<D>::type*>(data);
  const __m512i vlo = _mm512_set1_epi32(static_cast<int>(lo)), vhi = _mm512_set1_epi32(static_cast<int>(hi));
  const __m512i vinf = _mm512_set1_epi32(0x7f800000);
  int64_t j = 0, b = 0, nn = 0, i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i k = load_keys16<D>(p + i);
    b += __builtin_popcount(_mm512_cmplt_epu32_mask(k, vlo));
    nn += __builtin_popcount(_mm512_cmpgt_epu32_mask(k, vinf));
    const __mmask16 in = _mm512_cmpge_epu32_mask(k, vlo) & _mm512_cmple_epu32_mask(k, vhi);
    if (!in) continue;
    if (j + 16 > cap) return -1;
    _mm512_mask_compressstoreu_epi32(out + j, in, k);
    j += __builtin_popcount(in);
  }
  for (; i < n; ++i) {
    const uint32_t k = magnitude_key<D>(p[i]);
    b += k < lo;
    nn += k > 0x7f800000u;
    if (k >= lo && k <= hi) {
      if (j >= cap) return -1;
      out[j++] = k;
    }
  }
  *below = b;
  *nans = nn;
  return j;
}
#else
template <DType D>
static int64_t collect_t(const void* data, int64_t n, uint32_t lo, uint32_t hi, uint32_t* out, int64_t cap,
                         int64_t* below, int64_t* nans) {
  const auto* p = static_cast<const typename Storage<D>::type*>(data);
  int64_t j = 0, b = 0, nn = 0;
  for (int64_t s = 0; s < n; s += kBlock) {
    const int64_t e = s + kBlock < n ? s + kBlock : n;
    if (j + kBlock > cap) return -1;  // the branch-free append below may write one slot past the last candidate
    for (int64_t i = s; i < e; ++i) {
      const uint32_t k = magnitude_key<D>(p[i]);
      b += k < lo;
      nn += k > 0x7f800000u;
      out[j] = k;
      j += (k >= lo) & (k <= hi);
    }
  }
  *below = b;
  *nans = nn;
  return j;
}
#endif

template <DType D>
static int64_t count_nan_t(const void* data, int64_t n) {
  const auto* p = static_cast<const typename Storage<D>::type*>(data);
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += magnitude_key<D>(p[i]) > 0x7f800000u;
  return count;
}

// mask[i] = key >= lo; if zero_out, x[i] = 0 where key < lo. Returns how many keys equal lo (the ties, which this
// pass keeps; the caller prunes the first of them in index order).
template <DType D>
static int64_t write_mask_t(void* data, int64_t n, uint32_t lo, uint8_t* mask, bool zero_out) {
  using S = typename Storage<D>::type;
  auto* p = static_cast<S*>(data);
  int64_t ties = 0;
  if (mask && zero_out) {
    for (int64_t i = 0; i < n; ++i) {
      const S v = p[i];
      const uint32_t k = magnitude_key<D>(v);
      mask[i] = k >= lo;
      ties += k == lo;
      p[i] = k < lo ? S(0) : v;
    }
  } else if (mask) {
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t k = magnitude_key<D>(p[i]);
      mask[i] = k >= lo;
      ties += k == lo;
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const S v = p[i];
      const uint32_t k = magnitude_key<D>(v);
      ties += k == lo;
      p[i] = k < lo ? S(0) : v;
    }
  }
  return ties;
}

// Prunes the first `count` elements whose key equals `key` (the boundary ties, in index order).
template <DType D>
static void prune_ties_t(void* data, int64_t n, uint32_t key, int64_t count, uint8_t* mask, bool zero_out) {
  using S = typename Storage<D>::type;
  auto* p = static_cast<S*>(data);
  for (int64_t i = 0; i < n && count > 0; ++i) {
    if (magnitude_key<D>(p[i]) != key) continue;
    if (mask) mask[i] = 0;
    if (zero_out) p[i] = S(0);
    --count;
  }
}

// N:M mask for `groups` contiguous groups of m elements: keep the n largest magnitudes of each group; among equal
// magnitudes the lower index is kept. O(m^2) per group, meant for m <= 64.
#if FD_TIER == FD_TIER_AVX512
// m == 4 (2:4 and friends), four groups per vector: element j's rank counts the group members that beat it, found
// over the three in-group rotations i = (j + r) mod 4; i < j (the tie rule) holds exactly when j + r >= 4.
template <DType D>
static int64_t nm4_avx512(const typename Storage<D>::type* p, int64_t groups, int64_t n, uint8_t* mask) {
  const __m512i one = _mm512_set1_epi32(1), keep_below = _mm512_set1_epi32(static_cast<int>(n));
  const __m128i ones8 = _mm_set1_epi8(1);
  int64_t g = 0;
  for (; g + 4 <= groups; g += 4) {
    const __m512i k = load_keys16<D>(p + g * 4);
    __m512i rank = _mm512_setzero_si512();
#define FD_NM4_ROTATION(IMM, TIE_LANES)                                                          \
  {                                                                                              \
    const __m512i o = _mm512_shuffle_epi32(k, static_cast<_MM_PERM_ENUM>(IMM));                  \
    const __mmask16 beats = _mm512_cmpgt_epu32_mask(o, k) | (_mm512_cmpeq_epu32_mask(o, k) & (TIE_LANES)); \
    rank = _mm512_mask_add_epi32(rank, beats, rank, one);                                        \
  }
    FD_NM4_ROTATION(_MM_SHUFFLE(0, 3, 2, 1), 0x8888)
    FD_NM4_ROTATION(_MM_SHUFFLE(1, 0, 3, 2), 0xCCCC)
    FD_NM4_ROTATION(_MM_SHUFFLE(2, 1, 0, 3), 0xEEEE)
#undef FD_NM4_ROTATION
    _mm_storeu_si128(reinterpret_cast<__m128i*>(mask + g * 4),
                     _mm_maskz_mov_epi8(_mm512_cmplt_epi32_mask(rank, keep_below), ones8));
  }
  return g;
}
#endif

template <DType D>
static void nm_mask_t(const void* data, int64_t groups, int64_t m, int64_t n, uint8_t* mask) {
  const auto* p = static_cast<const typename Storage<D>::type*>(data);
  int64_t g = 0;
#if FD_TIER == FD_TIER_AVX512
  if (m == 4) g = nm4_avx512<D>(p, groups, n, mask);
#endif
  uint32_t keys[64];
  for (; g < groups; ++g) {
    const auto* q = p + g * m;
    uint8_t* out = mask + g * m;
    for (int64_t j = 0; j < m; ++j) keys[j] = magnitude_key<D>(q[j]);
    for (int64_t j = 0; j < m; ++j) {
      const uint32_t kj = keys[j];
      int64_t rank = 0;  // how many elements of the group beat element j
      for (int64_t i = 0; i < m; ++i) rank += (keys[i] > kj) | ((keys[i] == kj) & (i < j));
      out[j] = rank < n;
    }
  }
}

#define FD_DTYPE_SWITCH(dt, CALL)                      \
  switch (dt) {                                        \
    case DType::F32: { constexpr DType D_ = DType::F32; CALL; } break;  \
    case DType::F16: { constexpr DType D_ = DType::F16; CALL; } break;  \
    default: { constexpr DType D_ = DType::BF16; CALL; } break;         \
  }

void hist_hi(const void* data, int64_t n, DType dt, uint32_t* hist) {
  FD_DTYPE_SWITCH(dt, hist_hi_t<D_>(data, n, hist))
}
void hist_lo(const void* data, int64_t n, DType dt, uint32_t hi, uint32_t* hist) {
  FD_DTYPE_SWITCH(dt, hist_lo_t<D_>(data, n, hi, hist))
}
int64_t count_nan(const void* data, int64_t n, DType dt) {
  int64_t r = 0;
  FD_DTYPE_SWITCH(dt, r = count_nan_t<D_>(data, n))
  return r;
}
int64_t write_mask(void* data, int64_t n, DType dt, uint32_t lo, uint8_t* mask, bool zero_out) {
  int64_t r = 0;
  FD_DTYPE_SWITCH(dt, r = write_mask_t<D_>(data, n, lo, mask, zero_out))
  return r;
}
void prune_ties(void* data, int64_t n, DType dt, uint32_t key, int64_t count, uint8_t* mask, bool zero_out) {
  FD_DTYPE_SWITCH(dt, prune_ties_t<D_>(data, n, key, count, mask, zero_out))
}
void sample_keys(const void* data, int64_t stride, int64_t count, DType dt, uint32_t* out) {
  FD_DTYPE_SWITCH(dt, sample_keys_t<D_>(data, stride, count, out))
}
int64_t collect(const void* data, int64_t n, DType dt, uint32_t lo, uint32_t hi, uint32_t* out, int64_t cap,
                int64_t* below, int64_t* nans) {
  int64_t r = 0;
  FD_DTYPE_SWITCH(dt, r = collect_t<D_>(data, n, lo, hi, out, cap, below, nans))
  return r;
}
void nm_mask(const void* data, int64_t groups, int64_t m, int64_t n, DType dt, uint8_t* mask) {
  FD_DTYPE_SWITCH(dt, nm_mask_t<D_>(data, groups, m, n, mask))
}
#undef FD_DTYPE_SWITCH

}  // namespace FD_TIER_NS

template <>
const PruneLeaves& tier_leaves<PruneLeaves, FD_TIER_SIMD>() {
  using namespace FD_TIER_NS;
  static constexpr PruneLeaves t{hist_hi, hist_lo, count_nan, write_mask, prune_ties, nm_mask, sample_keys, collect};
  return t;
}
}  // namespace fd
