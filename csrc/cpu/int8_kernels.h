// Leaf kernels of the int8 GEMM and of per-row activation quantization, compiled once per SIMD tier
// (int8_scalar.cpp, x86/int8_avx2.cpp, x86/int8_avx512.cpp; see core.h).
//
// Microkernels (A: u8 bytes a + 128, rows of stride lda; B: one packed panel of kPanel = 64 columns, see int8_isa.h):
// * avx512 (VNNI): 6 rows x 64 columns held in 24 zmm accumulators; per group of 4 k, 4 panel loads and 6
//   broadcasts feed 24 vpdpbusd (u8 x s8 -> int32, no intermediate saturation).
// * avx2: vpmaddubsw would saturate its int16 pair sums (255 * 127 * 2 > 32767), so bytes are widened to int16 and
//   multiplied with vpmaddwd (pair sums <= 2 * 255 * 128, exact); 2 rows x 16 columns per pass, each accumulator
//   holding two partial sums per column that one vphaddd folds at the end.
// * scalar: plain loops with uint32 (wrapping) accumulators.
//
// Expects, before inclusion: "int8_isa.h", then the tier header (FD_TIER, FD_TIER_NS, FD_TIER_SIMD).

namespace fd {
namespace FD_TIER_NS {

// Tile (mr x kPanel int32 sums, before the shift compensation) -> output through the epilogue.
static inline void store_tile(const int32_t* tile, int64_t mr, int64_t row0, int64_t col0, int64_t ncols,
                              const Int8Epilogue& e) {
  const int32_t* comp = e.comp + col0;
  for (int64_t r = 0; r < mr; ++r) {
    const int32_t* t = tile + r * kPanel;
    if (e.out_f32) {
      float* o = e.out_f32 + (row0 + r) * e.ldo + col0;
      const float rs = e.row_scale[row0 + r];
      const float* cs = e.col_scale + col0;
      const float* b = e.bias ? e.bias + col0 : nullptr;
      for (int64_t j = 0; j < ncols; ++j) {
        const float v = static_cast<float>(static_cast<int32_t>(static_cast<uint32_t>(t[j]) -
                                                                static_cast<uint32_t>(comp[j]))) * rs * cs[j];
        o[j] = b ? v + b[j] : v;
      }
    } else {
      int32_t* o = e.out_i32 + (row0 + r) * e.ldo + col0;
      for (int64_t j = 0; j < ncols; ++j)
        o[j] = static_cast<int32_t>(static_cast<uint32_t>(t[j]) - static_cast<uint32_t>(comp[j]));
    }
  }
}

static inline int32_t load4(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

#if FD_TIER == FD_TIER_AVX512
constexpr int64_t kRows = 6;

template <int MR>
static inline void kernel(const uint8_t* a, int64_t lda, const int8_t* panel, int64_t kgroups, int32_t* tile) {
  __m512i acc[MR][4];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r)
    for (int i = 0; i < 4; ++i) acc[r][i] = _mm512_setzero_si512();
  for (int64_t g = 0; g < kgroups; ++g) {
    const int8_t* bg = panel + g * kGroupBytes;
    const __m512i b0 = _mm512_loadu_si512(bg), b1 = _mm512_loadu_si512(bg + 64);
    const __m512i b2 = _mm512_loadu_si512(bg + 128), b3 = _mm512_loadu_si512(bg + 192);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m512i va = _mm512_set1_epi32(load4(a + r * lda + 4 * g));
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], va, b0);
      acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], va, b1);
      acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], va, b2);
      acc[r][3] = _mm512_dpbusd_epi32(acc[r][3], va, b3);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r)
    for (int i = 0; i < 4; ++i) _mm512_store_si512(tile + r * kPanel + 16 * i, acc[r][i]);
}
#elif FD_TIER == FD_TIER_AVX2
constexpr int64_t kRows = 2;

template <int MR>
static inline void kernel(const uint8_t* a, int64_t lda, const int8_t* panel, int64_t kgroups, int32_t* tile) {
  for (int64_t q = 0; q < 4; ++q) {  // 16-column quarter of the panel
    __m256i acc[MR][4];
    for (int r = 0; r < MR; ++r)
      for (int i = 0; i < 4; ++i) acc[r][i] = _mm256_setzero_si256();
    for (int64_t g = 0; g < kgroups; ++g) {
      const int8_t* bq = panel + g * kGroupBytes + 64 * q;
      __m256i b[4];  // 4 columns x 4 k each, as int16
      for (int i = 0; i < 4; ++i)
        b[i] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bq + 16 * i)));
      for (int r = 0; r < MR; ++r) {
        const __m256i va =
            _mm256_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128(load4(a + r * lda + 4 * g))));
        for (int i = 0; i < 4; ++i) acc[r][i] = _mm256_add_epi32(acc[r][i], _mm256_madd_epi16(va, b[i]));
      }
    }
    // acc[r][i] holds (k0k1, k2k3) partial sums of columns 4i..4i+3; hadd folds the pairs of two accumulators into
    // columns [0 1 4 5 | 2 3 6 7] and the 64-bit permute restores the order.
    for (int r = 0; r < MR; ++r)
      for (int i = 0; i < 4; i += 2) {
        const __m256i h = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][i], acc[r][i + 1]), 0xD8);
        _mm256_store_si256(reinterpret_cast<__m256i*>(tile + r * kPanel + 16 * q + 4 * i), h);
      }
  }
}
#else
constexpr int64_t kRows = 1;

template <int MR>
static inline void kernel(const uint8_t* a, int64_t lda, const int8_t* panel, int64_t kgroups, int32_t* tile) {
  static_assert(MR == 1, "the scalar kernel runs one row at a time");
  uint32_t acc[kPanel] = {};
  for (int64_t g = 0; g < kgroups; ++g) {
    const int8_t* bg = panel + g * kGroupBytes;
    const uint8_t* ag = a + 4 * g;
    for (int64_t j = 0; j < kPanel; ++j)
      for (int64_t t = 0; t < 4; ++t)
        acc[j] += static_cast<uint32_t>(ag[t]) * static_cast<uint32_t>(static_cast<int32_t>(bg[4 * j + t]));
  }
  for (int64_t j = 0; j < kPanel; ++j) tile[j] = static_cast<int32_t>(acc[j]);
}
#endif

static void gemm_panel(const uint8_t* a, int64_t lda, int64_t rows, const int8_t* panel, int64_t kgroups, int64_t row0,
                int64_t col0, int64_t ncols, const Int8Epilogue& e) {
  alignas(64) int32_t tile[kRows * kPanel];
  int64_t r = 0;
  for (; r + kRows <= rows; r += kRows) {
    kernel<kRows>(a + r * lda, lda, panel, kgroups, tile);
    store_tile(tile, kRows, row0 + r, col0, ncols, e);
  }
#if FD_TIER != FD_TIER_SCALAR
  const int64_t rem = rows - r;
  if (rem == 0) return;
  const uint8_t* ar = a + r * lda;
#endif
#if FD_TIER == FD_TIER_AVX512
  switch (rem) {
    case 1: kernel<1>(ar, lda, panel, kgroups, tile); break;
    case 2: kernel<2>(ar, lda, panel, kgroups, tile); break;
    case 3: kernel<3>(ar, lda, panel, kgroups, tile); break;
    case 4: kernel<4>(ar, lda, panel, kgroups, tile); break;
    default: kernel<5>(ar, lda, panel, kgroups, tile); break;
  }
  store_tile(tile, rem, row0 + r, col0, ncols, e);
#elif FD_TIER == FD_TIER_AVX2
  kernel<1>(ar, lda, panel, kgroups, tile);
  store_tile(tile, rem, row0 + r, col0, ncols, e);
#endif
}

template <DType D>
static inline float load_float(const void* x, int64_t i) {
  if constexpr (D == DType::F32) {
    return static_cast<const float*>(x)[i];
  } else {
    const uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(x)[i]) << 16;
    return __builtin_bit_cast(float, bits);
  }
}

#if FD_TIER == FD_TIER_AVX512
template <DType D>
static inline __m512 load16(const void* x, int64_t i, __mmask16 m) {
  if constexpr (D == DType::F32) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(x) + i);
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(x) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

template <DType D>
static void quantize_row(const void* x, int64_t k, uint8_t* ua, int8_t* sa, float* scale) {
  __m512 vmax = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; i += 16) {
    const __mmask16 m = k - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (k - i)) - 1);
    vmax = _mm512_max_ps(vmax, _mm512_abs_ps(load16<D>(x, i, m)));
  }
  const float s = _mm512_reduce_max_ps(vmax) / 127.0f;
  *scale = s;
  const __m512 vs = _mm512_set1_ps(s == 0.0f ? 1.0f : s);  // all-zero row: every code is 0 either way
  const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  const __m512i shift = _mm512_set1_epi32(ua ? 128 : 0);
  for (int64_t i = 0; i < k; i += 16) {
    const __mmask16 m = k - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (k - i)) - 1);
    __m512 q = _mm512_roundscale_ps(_mm512_div_ps(load16<D>(x, i, m), vs),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm512_min_ps(_mm512_max_ps(q, lo), hi);
    const __m128i bytes = _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(q), shift));
    _mm_mask_storeu_epi8(ua ? static_cast<void*>(ua + i) : static_cast<void*>(sa + i), m, bytes);
  }
}
#else
template <DType D>
static void quantize_row(const void* x, int64_t k, uint8_t* ua, int8_t* sa, float* scale) {
  float absmax = 0.0f;
  for (int64_t i = 0; i < k; ++i) absmax = std::fmax(absmax, std::fabs(load_float<D>(x, i)));
  const float s = absmax / 127.0f;
  *scale = s;
  const float div = s == 0.0f ? 1.0f : s;
  for (int64_t i = 0; i < k; ++i) {
    const float q = std::fmin(std::fmax(std::nearbyint(load_float<D>(x, i) / div), -127.0f), 127.0f);
    const int32_t c = static_cast<int32_t>(q);
    if (ua) ua[i] = static_cast<uint8_t>(c + 128);
    else sa[i] = static_cast<int8_t>(c);
  }
}
#endif

static void quantize_rows(const void* x, DType dt, int64_t rows, int64_t k, uint8_t* ua, int64_t lda, int8_t* sa,
                   float* scales) {
  const int64_t esz = dt == DType::F32 ? 4 : 2;
  for (int64_t r = 0; r < rows; ++r) {
    const void* xr = static_cast<const char*>(x) + r * k * esz;
    uint8_t* ur = ua ? ua + r * lda : nullptr;
    if (dt == DType::F32) quantize_row<DType::F32>(xr, k, ur, sa ? sa + r * k : nullptr, scales + r);
    else quantize_row<DType::BF16>(xr, k, ur, sa ? sa + r * k : nullptr, scales + r);
    if (ur) std::memset(ur + k, 0, static_cast<size_t>(lda - k));
  }
}

}  // namespace FD_TIER_NS

template <>
const Int8Leaves& tier_leaves<Int8Leaves, FD_TIER_SIMD>() {
  static constexpr Int8Leaves t{FD_TIER_NS::gemm_panel, FD_TIER_NS::quantize_rows, FD_TIER_NS::store_tile};
  return t;
}
}  // namespace fd
