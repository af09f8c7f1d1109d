// Leaf kernels of magnitude pruning, written once as plain loops that the compiler vectorizes (plus AVX-512
// intrinsics where they pay, and AVX2 / NEON ones for the collect pass and 2:4 masks). Compiled once per SIMD tier
// (prune_scalar.cpp, x86/prune_avx2.cpp, x86/prune_avx512.cpp, arm/prune_neon.cpp; see core.h), so one binary
// carries every tier and picks one at run time.
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

#if FD_TIER == FD_TIER_AVX2
// Keys of 8 elements (as magnitude_key; fp16 through F16C, exact like the AVX-512 path below).
template <DType D>
static inline __m256i load_keys8(const typename Storage<D>::type* p) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  if constexpr (D == DType::F32) {
    return _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), abs_mask);
  } else if constexpr (D == DType::BF16) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_slli_epi32(_mm256_and_si256(w, _mm256_set1_epi32(0x7fff)), 16);
  } else {
    const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_and_si256(_mm256_castps_si256(f), abs_mask);
  }
}

// Sum of the 8 int32 lanes.
static inline int64_t hsum8(__m256i v) {
  alignas(32) int32_t l[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(l), v);
  int64_t s = 0;
  for (int32_t x : l) s += x;
  return s;
}

// AVX2 has no compress store: kPackLanes[m] lists the lanes set in the 8-bit mask m, in order, one per byte, for
// vpermd to move those lanes to the front.
struct PackLanes {
  uint64_t idx[256];
};
static constexpr PackLanes make_pack_lanes() {
  PackLanes t{};
  for (int m = 0; m < 256; ++m) {
    int j = 0;
    for (int b = 0; b < 8; ++b)
      if ((m >> b) & 1) t.idx[m] |= static_cast<uint64_t>(b) << (8 * j++);
  }
  return t;
}
static constexpr PackLanes kPackLanes = make_pack_lanes();
#elif FD_TIER >= FD_TIER_NEON
// Keys of 4 elements (as magnitude_key, fp16 with the same branch-free formula).
template <DType D>
static inline uint32x4_t load_keys4(const typename Storage<D>::type* p) {
  if constexpr (D == DType::F32) {
    return vandq_u32(vld1q_u32(p), vdupq_n_u32(0x7fffffffu));
  } else if constexpr (D == DType::BF16) {
    return vshll_n_u16(vand_u16(vld1_u16(p), vdup_n_u16(0x7fff)), 16);
  } else {
    const uint32x4_t h = vmovl_u16(vand_u16(vld1_u16(p), vdup_n_u16(0x7fff)));
    const uint32x4_t normal = vaddq_u32(vshlq_n_u32(h, 13), vdupq_n_u32(0x38000000u));
    const uint32x4_t sub = vreinterpretq_u32_f32(vmulq_f32(vcvtq_f32_u32(h), vdupq_n_f32(0x1p-24f)));
    const uint32x4_t infnan = vorrq_u32(vshlq_n_u32(h, 13), vdupq_n_u32(0x7f800000u));
    const uint32x4_t big = vbslq_u32(vcgeq_u32(h, vdupq_n_u32(0x7c00u)), infnan, normal);
    return vbslq_u32(vcltq_u32(h, vdupq_n_u32(0x400u)), sub, big);
  }
}

// NEON has no compress store: kPackBytes[m] is the tbl shuffle that moves the 32-bit lanes set in the 4-bit mask m
// to the front, in order (bytes past them select 0).
struct PackBytes {
  uint8_t idx[16][16];
};
static constexpr PackBytes make_pack_bytes() {
  PackBytes t{};
  for (int m = 0; m < 16; ++m) {
    int j = 0;
    for (int b = 0; b < 4; ++b)
      if ((m >> b) & 1) {
        for (int t8 = 0; t8 < 4; ++t8) t.idx[m][4 * j + t8] = static_cast<uint8_t>(4 * b + t8);
        ++j;
      }
    for (int q = 4 * j; q < 16; ++q) t.idx[m][q] = 0xff;
  }
  return t;
}
static constexpr PackBytes kPackBytes = make_pack_bytes();

// The 4-bit mask of a compare result's all-ones lanes.
static inline uint32_t lane_bits4(uint32x4_t m) {
  const uint32x4_t weights = {1, 2, 4, 8};
  return vaddvq_u32(vandq_u32(m, weights));
}

// Keep-flags (0 / 1 bytes) of 4 compare results.
static inline uint8x8_t flags4(uint32x4_t m) {
  const uint16x4_t h = vmovn_u32(m);
  return vand_u8(vmovn_u16(vcombine_u16(h, h)), vdup_n_u8(1));
}
#endif

// Histograms: key >> 16 (kHiBins bins) over a range, and key & 0xffff (kLoBins bins) over the elements whose
// key >> 16 == hi.
//
// Zero keys (already-pruned weights) repeat in long runs, and increments chained through one counter wait on store
// forwarding (measured 2.4 ns each, 5x a spread-out increment). The AVX-512 versions therefore count zeros apart
// and compress-store the other bins of each group of 16 keys into a small buffer that is then counted (re-pruning a
// 90%-zero weight: 9.7 -> about 1 ms per 4M elements). The generic versions are plain loops: as fast on fresh
// weights, slower on mostly-zero ones. Compression goes to a register and the whole vector is stored (the buffers
// have 16 slots of slack): vpcompressd with a memory destination is microcoded on AMD Zen 4/5 (the collect pass
// below ran at 17 GB/s with it, and as fast as one read pass should without it).
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
  alignas(64) uint32_t buf[kGroup + 16];
  uint32_t zeros = 0;
  int64_t i = 0;
  for (; i + kGroup <= n; i += kGroup) {
    uint32_t* q = buf;
    for (int64_t v = 0; v < kGroup; v += 16) {
      const __m512i k = load_keys16<D>(p + i + v);
      const __mmask16 nonzero = _mm512_test_epi32_mask(k, k);
      _mm512_storeu_si512(q, _mm512_maskz_compress_epi32(nonzero, _mm512_srli_epi32(k, 16)));
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
  alignas(64) uint32_t buf[kGroup + 16];
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
      _mm512_storeu_si512(q, _mm512_maskz_compress_epi32(nonzero, _mm512_and_si512(k, low)));
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

// One read pass for the sampled bracket [lo, hi]: counts keys < lo, == lo, == hi and NaNs, and copies keys to out
// (capacity cap): those strictly inside (lo, hi), so that a value repeated many times at an end of the bracket (the
// zeros of an already pruned tensor) is counted, not copied; with Mark, every key in [lo, hi]. Returns how many were
// copied, or -1 once more than cap would be (the caller falls back).
// With Mark, the same pass also writes the provisional keep-mask mask[i] = key >= lo and the copied keys' indices
// to idx: once the threshold is known, only the copied (bracketed) elements need their flag fixed.
// The SIMD versions store every vector's compressed keys without a branch (a vector holds a bracketed key about
// 30% of the time, at random: the branch mispredicted often enough to halve the pass's speed).
template <DType D, bool Mark>
static int64_t collect_t(const void* data, int64_t n, uint32_t lo, uint32_t hi, uint32_t* out, uint32_t* idx,
                         int64_t cap, CollectCounts* counts, uint8_t* mask) {
  const auto* p = static_cast<const typename Storage<D>::type*>(data);
  int64_t j = 0, i = 0;
  CollectCounts c{};
#if FD_TIER == FD_TIER_AVX512
  const __m512i vlo = _mm512_set1_epi32(static_cast<int>(lo)), vhi = _mm512_set1_epi32(static_cast<int>(hi));
  const __m512i vinf = _mm512_set1_epi32(0x7f800000);
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m128i ones8 = _mm_set1_epi8(1);
  for (; i + 16 <= n; i += 16) {
    const __m512i k = load_keys16<D>(p + i);
    const __mmask16 ge = _mm512_cmpge_epu32_mask(k, vlo), at_lo = _mm512_cmpeq_epu32_mask(k, vlo);
    const __mmask16 at_hi = _mm512_cmpeq_epu32_mask(k, vhi);
    c.below += 16 - __builtin_popcount(ge);
    c.at_lo += __builtin_popcount(at_lo);
    c.at_hi += __builtin_popcount(at_hi);
    c.nans += __builtin_popcount(_mm512_cmpgt_epu32_mask(k, vinf));
    __mmask16 in = ge & _mm512_cmple_epu32_mask(k, vhi);
    if constexpr (!Mark) in &= ~(at_lo | at_hi);
    if (j + 16 > cap) return -1;
    _mm512_storeu_si512(out + j, _mm512_maskz_compress_epi32(in, k));
    if constexpr (Mark) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(mask + i), _mm_maskz_mov_epi8(ge, ones8));
      const __m512i at = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int>(i)));
      _mm512_storeu_si512(idx + j, _mm512_maskz_compress_epi32(in, at));
    }
    j += __builtin_popcount(in);
  }
#elif FD_TIER == FD_TIER_AVX2
  // Keys and bounds are below 2^31: signed compares order them. Counts gather per lane (subtracting all-ones
  // compare results) and the bracketed keys are left-packed with vpermd.
  const __m256i vlo = _mm256_set1_epi32(static_cast<int>(lo)), vhi = _mm256_set1_epi32(static_cast<int>(hi));
  const __m256i vinf = _mm256_set1_epi32(0x7f800000);
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m128i ones8 = _mm_set1_epi8(1);
  __m256i nb = _mm256_setzero_si256(), nlo = nb, nhi = nb, nnv = nb;
  for (; i + 8 <= n; i += 8) {
    const __m256i k = load_keys8<D>(p + i);
    const __m256i lt = _mm256_cmpgt_epi32(vlo, k), at_lo = _mm256_cmpeq_epi32(k, vlo);
    const __m256i at_hi = _mm256_cmpeq_epi32(k, vhi);
    nb = _mm256_sub_epi32(nb, lt);
    nlo = _mm256_sub_epi32(nlo, at_lo);
    nhi = _mm256_sub_epi32(nhi, at_hi);
    nnv = _mm256_sub_epi32(nnv, _mm256_cmpgt_epi32(k, vinf));
    __m256i out_of = _mm256_or_si256(lt, _mm256_cmpgt_epi32(k, vhi));  // lanes not copied
    if constexpr (!Mark) out_of = _mm256_or_si256(out_of, _mm256_or_si256(at_lo, at_hi));
    const int in = ~_mm256_movemask_ps(_mm256_castsi256_ps(out_of)) & 0xff;
    if (j + 8 > cap) return -1;
    const __m256i lanes = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(kPackLanes.idx[in])));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), _mm256_permutevar8x32_epi32(k, lanes));
    if constexpr (Mark) {
      const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(lt), _mm256_extracti128_si256(lt, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(mask + i), _mm_andnot_si128(_mm_packs_epi16(w16, w16), ones8));
      const __m256i at = _mm256_add_epi32(iota, _mm256_set1_epi32(static_cast<int>(i)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + j), _mm256_permutevar8x32_epi32(at, lanes));
    }
    j += __builtin_popcount(in);
  }
  c = {hsum8(nb), hsum8(nlo), hsum8(nhi), hsum8(nnv)};
#elif FD_TIER >= FD_TIER_NEON
  // Keys and bounds are at most 0x7fffffff: unsigned compares order them. Counts gather per lane (subtracting
  // all-ones compare results) and the bracketed keys are left-packed with tbl.
  const uint32x4_t vlo = vdupq_n_u32(lo), vhi = vdupq_n_u32(hi), vinf = vdupq_n_u32(0x7f800000u);
  const uint32x4_t iota = {0, 1, 2, 3};
  uint32x4_t nb = vdupq_n_u32(0), nlo = nb, nhi = nb, nnv = nb;
  for (; i + 4 <= n; i += 4) {
    const uint32x4_t k = load_keys4<D>(p + i);
    const uint32x4_t lt = vcltq_u32(k, vlo), at_lo = vceqq_u32(k, vlo), at_hi = vceqq_u32(k, vhi);
    nb = vsubq_u32(nb, lt);
    nlo = vsubq_u32(nlo, at_lo);
    nhi = vsubq_u32(nhi, at_hi);
    nnv = vsubq_u32(nnv, vcgtq_u32(k, vinf));
    uint32x4_t in = vbicq_u32(vcleq_u32(k, vhi), lt);
    if constexpr (!Mark) in = vbicq_u32(in, vorrq_u32(at_lo, at_hi));
    const uint32_t bits = lane_bits4(in);
    if (j + 4 > cap) return -1;
    const uint8x16_t shuffle = vld1q_u8(kPackBytes.idx[bits]);
    vst1q_u32(out + j, vreinterpretq_u32_u8(vqtbl1q_u8(vreinterpretq_u8_u32(k), shuffle)));
    if constexpr (Mark) {
      vst1_lane_u32(reinterpret_cast<uint32_t*>(mask + i), vreinterpret_u32_u8(flags4(vmvnq_u32(lt))), 0);
      const uint32x4_t at = vaddq_u32(iota, vdupq_n_u32(static_cast<uint32_t>(i)));
      vst1q_u32(idx + j, vreinterpretq_u32_u8(vqtbl1q_u8(vreinterpretq_u8_u32(at), shuffle)));
    }
    j += __builtin_popcount(bits);
  }
  c = {vaddvq_u32(nb), vaddvq_u32(nlo), vaddvq_u32(nhi), vaddvq_u32(nnv)};
#else
  for (int64_t e = kBlock; e <= n; e += kBlock) {
    if (j + kBlock > cap) return -1;  // the branch-free append below may write one slot past the last candidate
    for (; i < e; ++i) {
      const uint32_t k = magnitude_key<D>(p[i]);
      c.below += k < lo;
      c.at_lo += k == lo;
      c.at_hi += k == hi;
      c.nans += k > 0x7f800000u;
      out[j] = k;
      if constexpr (Mark) {
        mask[i] = k >= lo;
        idx[j] = static_cast<uint32_t>(i);
      }
      j += (k >= lo) & (k <= hi) & (Mark || ((k != lo) & (k != hi)));
    }
  }
#endif
  for (; i < n; ++i) {  // the tail
    const uint32_t k = magnitude_key<D>(p[i]);
    c.below += k < lo;
    c.at_lo += k == lo;
    c.at_hi += k == hi;
    c.nans += k > 0x7f800000u;
    if constexpr (Mark) mask[i] = k >= lo;
    if (k >= lo && k <= hi && (Mark || (k != lo && k != hi))) {
      if (j >= cap) return -1;
      if constexpr (Mark) idx[j] = static_cast<uint32_t>(i);
      out[j++] = k;
    }
  }
  *counts = c;
  return j;
}

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
  if (!zero_out) {
    int64_t ties = 0;
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t k = magnitude_key<D>(p[i]);
      mask[i] = k >= lo;
      ties += k == lo;
    }
    return ties;
  }
  // Zeroing: a block with nothing to zero is not stored, so it stays clean in the cache. (Rewriting every element
  // made re-pruning a pruned tensor dirty all of it: the next read of the tensor then paid a write-back per line,
  // and a re-prune's selection pass took 6.9 ms instead of 2.8 for 64 MiB.)
  int64_t ties = 0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = b + kBlock < n ? b + kBlock : n;
    uint32_t changes = 0;
    int64_t t = 0;
    if (mask) {
      for (int64_t i = b; i < e; ++i) {
        const uint32_t k = magnitude_key<D>(p[i]);
        mask[i] = k >= lo;
        t += k == lo;
        changes |= (k < lo) & (p[i] != 0);
      }
    } else {
      for (int64_t i = b; i < e; ++i) {
        const uint32_t k = magnitude_key<D>(p[i]);
        t += k == lo;
        changes |= (k < lo) & (p[i] != 0);
      }
    }
    ties += t;
    if (changes)
      for (int64_t i = b; i < e; ++i) p[i] = magnitude_key<D>(p[i]) < lo ? S(0) : p[i];
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
// magnitudes the lower index is kept. O(m^2) per group, meant for m <= 64. Returns how many elements are NaN (the
// caller raises then; counting here spares a separate read pass).
//
// m == 4 (2:4 and friends) is vectorized at the SIMD tiers, groups side by side in a vector: element j's rank counts
// the group members that beat it, found over the three in-group rotations i = (j + r) mod 4; i < j (the tie rule)
// holds exactly when j + r >= 4, i.e. in lanes {3}, {2, 3}, {1, 2, 3} of each group for r = 1, 2, 3.
#if FD_TIER == FD_TIER_AVX512
template <DType D>
static int64_t nm4_vec(const typename Storage<D>::type* p, int64_t groups, int64_t n, uint8_t* mask,
                       int64_t* nans) {
  const __m512i one = _mm512_set1_epi32(1), keep_below = _mm512_set1_epi32(static_cast<int>(n));
  const __m512i vinf = _mm512_set1_epi32(0x7f800000);
  const __m128i ones8 = _mm_set1_epi8(1);
  int64_t g = 0, nn = 0;
  for (; g + 4 <= groups; g += 4) {
    const __m512i k = load_keys16<D>(p + g * 4);
    nn += __builtin_popcount(_mm512_cmpgt_epu32_mask(k, vinf));
    __m512i rank = _mm512_setzero_si512();
#define FD_NM4_ROTATION(IMM, TIE_LANES)                                                                       \
  {                                                                                                           \
    const __m512i o = _mm512_shuffle_epi32(k, static_cast<_MM_PERM_ENUM>(IMM));                               \
    const __mmask16 beats = _mm512_cmpgt_epu32_mask(o, k) | (_mm512_cmpeq_epu32_mask(o, k) & (TIE_LANES));   \
    rank = _mm512_mask_add_epi32(rank, beats, rank, one);                                                     \
  }
    FD_NM4_ROTATION(_MM_SHUFFLE(0, 3, 2, 1), 0x8888)
    FD_NM4_ROTATION(_MM_SHUFFLE(1, 0, 3, 2), 0xCCCC)
    FD_NM4_ROTATION(_MM_SHUFFLE(2, 1, 0, 3), 0xEEEE)
#undef FD_NM4_ROTATION
    _mm_storeu_si128(reinterpret_cast<__m128i*>(mask + g * 4),
                     _mm_maskz_mov_epi8(_mm512_cmplt_epi32_mask(rank, keep_below), ones8));
  }
  *nans += nn;
  return g;
}
#elif FD_TIER == FD_TIER_AVX2
// Two groups per vector (one per 128-bit lane, which vpshufd rotates within). Keys are below 2^31 (NaNs included):
// signed compares order them; a compare's all-ones lanes, subtracted, count.
template <DType D>
static int64_t nm4_vec(const typename Storage<D>::type* p, int64_t groups, int64_t n, uint8_t* mask,
                       int64_t* nans) {
  const __m256i keep_below = _mm256_set1_epi32(static_cast<int>(n)), vinf = _mm256_set1_epi32(0x7f800000);
  const __m256i tie1 = _mm256_setr_epi32(0, 0, 0, -1, 0, 0, 0, -1), tie2 = _mm256_setr_epi32(0, 0, -1, -1, 0, 0, -1, -1);
  const __m256i tie3 = _mm256_setr_epi32(0, -1, -1, -1, 0, -1, -1, -1);
  const __m128i ones8 = _mm_set1_epi8(1);
  __m256i nn = _mm256_setzero_si256();
  int64_t g = 0;
  for (; g + 2 <= groups; g += 2) {
    const __m256i k = load_keys8<D>(p + g * 4);
    nn = _mm256_sub_epi32(nn, _mm256_cmpgt_epi32(k, vinf));
    __m256i rank = _mm256_setzero_si256();
#define FD_NM4_ROTATION(IMM, TIE_LANES)                                                                       \
  {                                                                                                           \
    const __m256i o = _mm256_shuffle_epi32(k, IMM);                                                           \
    rank = _mm256_sub_epi32(rank, _mm256_or_si256(_mm256_cmpgt_epi32(o, k),                                    \
                                                  _mm256_and_si256(_mm256_cmpeq_epi32(o, k), TIE_LANES)));    \
  }
    FD_NM4_ROTATION(_MM_SHUFFLE(0, 3, 2, 1), tie1)
    FD_NM4_ROTATION(_MM_SHUFFLE(1, 0, 3, 2), tie2)
    FD_NM4_ROTATION(_MM_SHUFFLE(2, 1, 0, 3), tie3)
#undef FD_NM4_ROTATION
    const __m256i keep = _mm256_cmpgt_epi32(keep_below, rank);  // all-ones where rank < n
    const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(keep), _mm256_extracti128_si256(keep, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(mask + g * 4), _mm_and_si128(_mm_packs_epi16(w16, w16), ones8));
  }
  *nans += hsum8(nn);
  return g;
}
#elif FD_TIER >= FD_TIER_NEON
// One group per vector (vext rotates it), four groups per 16-byte mask store. Keys are unsigned-ordered.
template <DType D>
static int64_t nm4_vec(const typename Storage<D>::type* p, int64_t groups, int64_t n, uint8_t* mask,
                       int64_t* nans) {
  const uint32x4_t keep_below = vdupq_n_u32(static_cast<uint32_t>(n)), vinf = vdupq_n_u32(0x7f800000u);
  const uint32x4_t tie1 = {0, 0, 0, ~0u}, tie2 = {0, 0, ~0u, ~0u}, tie3 = {0, ~0u, ~0u, ~0u};
  uint32x4_t nn = vdupq_n_u32(0);
  auto keep = [&](const typename Storage<D>::type* q) {  // all-ones where the element's rank < n
    const uint32x4_t k = load_keys4<D>(q);
    nn = vsubq_u32(nn, vcgtq_u32(k, vinf));
    uint32x4_t rank = vdupq_n_u32(0);
#define FD_NM4_ROTATION(R, TIE_LANES)                                                                    \
  {                                                                                                      \
    const uint32x4_t o = vextq_u32(k, k, R);                                                             \
    rank = vsubq_u32(rank, vorrq_u32(vcgtq_u32(o, k), vandq_u32(vceqq_u32(o, k), TIE_LANES)));           \
  }
    FD_NM4_ROTATION(1, tie1)
    FD_NM4_ROTATION(2, tie2)
    FD_NM4_ROTATION(3, tie3)
#undef FD_NM4_ROTATION
    return vmovn_u32(vcltq_u32(rank, keep_below));
  };
  int64_t g = 0;
  for (; g + 4 <= groups; g += 4) {
    const uint8x8_t lo = vmovn_u16(vcombine_u16(keep(p + g * 4), keep(p + g * 4 + 4)));
    const uint8x8_t hi = vmovn_u16(vcombine_u16(keep(p + g * 4 + 8), keep(p + g * 4 + 12)));
    vst1q_u8(mask + g * 4, vandq_u8(vcombine_u8(lo, hi), vdupq_n_u8(1)));
  }
  *nans += vaddvq_u32(nn);
  return g;
}
#endif

template <DType D>
static int64_t nm_mask_t(const void* data, int64_t groups, int64_t m, int64_t n, uint8_t* mask) {
  const auto* p = static_cast<const typename Storage<D>::type*>(data);
  int64_t g = 0, nans = 0;
#if FD_TIER != FD_TIER_SCALAR
  if (m == 4) g = nm4_vec<D>(p, groups, n, mask, &nans);
#endif
  uint32_t keys[64];
  for (; g < groups; ++g) {
    const auto* q = p + g * m;
    uint8_t* out = mask + g * m;
    for (int64_t j = 0; j < m; ++j) {
      keys[j] = magnitude_key<D>(q[j]);
      nans += keys[j] > 0x7f800000u;
    }
    for (int64_t j = 0; j < m; ++j) {
      const uint32_t kj = keys[j];
      int64_t rank = 0;  // how many elements of the group beat element j
      for (int64_t i = 0; i < m; ++i) rank += (keys[i] > kj) | ((keys[i] == kj) & (i < j));
      out[j] = rank < n;
    }
  }
  return nans;
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
int64_t collect(const void* data, int64_t n, DType dt, uint32_t lo, uint32_t hi, uint32_t* out, uint32_t* idx,
                int64_t cap, CollectCounts* counts, uint8_t* mask) {
  int64_t r = 0;
  if (mask) FD_DTYPE_SWITCH(dt, r = (collect_t<D_, true>(data, n, lo, hi, out, idx, cap, counts, mask)))
  else FD_DTYPE_SWITCH(dt, r = (collect_t<D_, false>(data, n, lo, hi, out, idx, cap, counts, mask)))
  return r;
}
int64_t nm_mask(const void* data, int64_t groups, int64_t m, int64_t n, DType dt, uint8_t* mask) {
  int64_t r = 0;
  FD_DTYPE_SWITCH(dt, r = nm_mask_t<D_>(data, groups, m, n, mask))
  return r;
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
