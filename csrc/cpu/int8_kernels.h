// Leaf kernels of the int8 GEMM and of per-row activation quantization, compiled once per SIMD tier
// (int8_scalar.cpp, x86/int8_avx2.cpp, x86/int8_avx512.cpp, arm/int8_neon.cpp, arm/int8_neon_dot.cpp; see core.h).
//
// Microkernels (B: one packed panel of kPanel = 64 columns, see int8.h; per group of 4 k, 4 bytes per column):
// * avx512 (VNNI): A as u8 a + 128; 6 rows x 64 columns in 24 zmm accumulators; per group, 4 panel loads and 6
//   broadcasts feed 24 vpdpbusd (u8 x s8 -> int32, no intermediate saturation). Exact for any B.
// * avx2, fast (B in [-127, 127]): the sign trick on int8 A. vpmaddubsw multiplies u8 by s8 and saturates its int16
//   pair sums, so it gets |a| and sign(a) * b (vpsignb): |pair| <= 2 * 128 * 127 < 32767, exact; vpmaddwd with ones
//   then sums the pairs into int32. 4 rows x 16 columns (8 accumulators), per row and 8 columns: vpsignb,
//   vpmaddubsw, vpmaddwd, vpaddd for 32 multiply-adds, two of them on the multiply ports. Each prepared row holds
//   a, then |a| (a vpabsb per row and group cost 10%: 98 -> 108 GMAC/s). A b of -128 breaks the trick
//   (sign(a) * -128 wraps), hence:
// * avx2, exact (any B): int16 A (widened once when prepared) times B widened per group (vpmovsxbw, shared by 6
//   rows), vpmaddwd (pair sums <= 2 * 128 * 128, exact); 6 rows x 8 columns (12 accumulators), per row and 4
//   columns: vpmaddwd, vpaddd for 16 multiply-adds, one on the multiply ports. The same multiply-port work per
//   multiply-add as the sign trick; measured on Zen 5 (1 thread, 1024 x 1024 weight in L2, M = 16..384): sign trick
//   99-103, widening 97-103 GMAC/s (the 2 x 16 widening kernel before them: 43-76); at M = 1 the sign trick runs
//   65 and widening 42 GMAC/s, as widening B costs one vpmovsxbw per 16 multiply-adds when no row shares it.
// * neon_dot (ARMv8.2 sdot): int8 A as is; 4 rows x 16 columns in 16 q-register accumulators; one 16-byte load of
//   a row holds 4 groups, and per group 4 panel loads feed 16 sdot (by lane: s8 x s8 -> int32, 4 products summed
//   per lane, exact for any B including -128).
// * neon (every aarch64 core): int8 A as is; 4 rows x 8 columns, 16 accumulators of (column, k pair) partial sums;
//   per row and group of 8 columns 4 smull (s8 x s8 -> s16, |product| <= 16384: exact) and 4 sadalp (pairs into
//   int32) for 32 multiply-adds; addp folds the pairs per column once per tile. Exact for any B.
// * scalar: plain loops with wrapping uint32 accumulators on int8 A.
//
// Expects, before inclusion: "int8_isa.h", then the tier header (FD_TIER, FD_TIER_NS, FD_TIER_SIMD).

namespace fd {
namespace FD_TIER_NS {

// Tile (mr x kPanel int32 sums) -> output through the epilogue (comp, when set, undoes the u8 shift of A).
static inline void store_tile(const int32_t* tile, int64_t mr, int64_t row0, int64_t col0, int64_t ncols,
                              const Int8Epilogue& e) {
  alignas(64) uint32_t comp[kPanel] = {};
  if (e.comp)
    for (int64_t j = 0; j < ncols; ++j) comp[j] = static_cast<uint32_t>(e.comp[col0 + j]);
  for (int64_t r = 0; r < mr; ++r) {
    const int32_t* t = tile + r * kPanel;
    if (e.out_f32) {
      float* o = e.out_f32 + (row0 + r) * e.ldo + col0;
      const float rs = e.row_scale[row0 + r];
      const float* cs = e.col_scale + col0;
      const float* b = e.bias ? e.bias + col0 : nullptr;
      for (int64_t j = 0; j < ncols; ++j) {
        const float v = static_cast<float>(static_cast<int32_t>(static_cast<uint32_t>(t[j]) - comp[j])) * rs * cs[j];
        o[j] = b ? v + b[j] : v;
      }
    } else {
      int32_t* o = e.out_i32 + (row0 + r) * e.ldo + col0;
      for (int64_t j = 0; j < ncols; ++j) o[j] = static_cast<int32_t>(static_cast<uint32_t>(t[j]) - comp[j]);
    }
  }
}

static inline int32_t load4(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Prepared-A forms, each row zero-padded to lda elements: int8 as is; int8 then |a| (lda bytes each); u8 a + 128;
// int16.
[[maybe_unused]] static void prepare_s8(const int8_t* a, int64_t k, void* dst, int64_t lda) {
  auto* d = static_cast<int8_t*>(dst);
  if (k > 0 && d != a) std::memmove(d, a, static_cast<size_t>(k));
  if (lda > k) std::memset(d + k, 0, static_cast<size_t>(lda - k));  // (K = 0: no buffer at all)
}

[[maybe_unused]] static void prepare_s8_abs(const int8_t* a, int64_t k, void* dst, int64_t lda) {
  prepare_s8(a, k, dst, lda);
  auto* d = static_cast<uint8_t*>(dst);
  const auto* q = static_cast<const int8_t*>(dst);
  for (int64_t i = 0; i < lda; ++i) d[lda + i] = static_cast<uint8_t>(std::abs(static_cast<int32_t>(q[i])));
}

[[maybe_unused]] static void prepare_u8_shifted(const int8_t* a, int64_t k, void* dst, int64_t lda) {
  auto* d = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < k; ++i) d[i] = static_cast<uint8_t>(a[i]) ^ 0x80;  // a + 128 as an unsigned byte
  if (lda > k) std::memset(d + k, 0, static_cast<size_t>(lda - k));
}

[[maybe_unused]] static void prepare_s16(const int8_t* a, int64_t k, void* dst, int64_t lda) {
  auto* d = static_cast<int16_t*>(dst);
  for (int64_t i = 0; i < k; ++i) d[i] = a[i];
  for (int64_t i = k; i < lda; ++i) d[i] = 0;
}

// Runs kernel(rows_constant, a_rows, tile) over the rows of one panel (the kernel knows the panel): full tiles of
// kRows rows, then the remainder with the matching row count, each tile stored through the epilogue.
template <int64_t kRows, typename T, typename Kernel>
static inline void panel_rows(const T* a, int64_t lda, int64_t rows, int64_t row0, int64_t col0, int64_t ncols,
                              const Int8Epilogue& e, Kernel kernel) {
  alignas(64) int32_t tile[kRows * kPanel];
  int64_t r = 0;
  for (; r + kRows <= rows; r += kRows) {
    kernel(std::integral_constant<int, kRows>{}, a + r * lda, tile);
    store_tile(tile, kRows, row0 + r, col0, ncols, e);
  }
  if constexpr (kRows > 1) {
    const int64_t rem = rows - r;
    if (rem == 0) return;
    const T* ar = a + r * lda;
    if (rem == 1) kernel(std::integral_constant<int, 1>{}, ar, tile);
    if constexpr (kRows > 2) if (rem == 2) kernel(std::integral_constant<int, 2>{}, ar, tile);
    if constexpr (kRows > 3) if (rem == 3) kernel(std::integral_constant<int, 3>{}, ar, tile);
    if constexpr (kRows > 4) if (rem == 4) kernel(std::integral_constant<int, 4>{}, ar, tile);
    if constexpr (kRows > 5) if (rem == 5) kernel(std::integral_constant<int, 5>{}, ar, tile);
    store_tile(tile, rem, row0 + r, col0, ncols, e);
  }
}

#if FD_TIER == FD_TIER_AVX512
// VNNI: MR rows x 64 columns.
template <int MR>
static inline void vnni_kernel(const uint8_t* a, int64_t lda, const int8_t* panel, int64_t kgroups, int32_t* tile) {
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

static void gemm_vnni(const void* a, int64_t lda, int64_t rows, const int8_t* panel, int64_t kgroups, int64_t row0,
                      int64_t col0, int64_t ncols, const Int8Epilogue& e) {
  panel_rows<6>(static_cast<const uint8_t*>(a), lda, rows, row0, col0, ncols, e,
                [&](auto mr, const uint8_t* ar, int32_t* tile) {
                  vnni_kernel<decltype(mr)::value>(ar, lda, panel, kgroups, tile);
                });
}
#elif FD_TIER == FD_TIER_AVX2
// Sign trick: MR rows x 16 columns of the panel starting at column 16 * c; row r's codes at a + r * stride, their
// magnitudes `abs_off` bytes further. The empty asm statements pin each row's accumulators in registers: without
// them GCC interleaves the rows' products and spills accumulators to the stack.
template <int MR>
static inline void sign_kernel(const int8_t* a, int64_t stride, int64_t abs_off, const int8_t* panel,
                               int64_t kgroups, int64_t c, int32_t* tile) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const int8_t* bc = panel + 64 * c;
  for (int64_t g = 0; g < kgroups; ++g) {
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bc + g * kGroupBytes));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bc + g * kGroupBytes + 32));
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      const __m256i va = _mm256_set1_epi32(load4(a + r * stride + 4 * g));
      const __m256i ua = _mm256_set1_epi32(load4(a + r * stride + abs_off + 4 * g));
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(ua, _mm256_sign_epi8(b0, va)),
                                                                ones));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(ua, _mm256_sign_epi8(b1, va)),
                                                                ones));
      __asm__("" : "+x"(acc[r][0]), "+x"(acc[r][1]));
    }
  }
  for (int r = 0; r < MR; ++r) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(tile + r * kPanel + 16 * c), acc[r][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(tile + r * kPanel + 16 * c + 8), acc[r][1]);
  }
}

static void gemm_sign(const void* a, int64_t lda, int64_t rows, const int8_t* panel, int64_t kgroups, int64_t row0,
                      int64_t col0, int64_t ncols, const Int8Epilogue& e) {
  panel_rows<4>(static_cast<const int8_t*>(a), 2 * lda, rows, row0, col0, ncols, e,
                [&](auto mr, const int8_t* ar, int32_t* tile) {
                  for (int64_t c = 0; c < 4; ++c)
                    sign_kernel<decltype(mr)::value>(ar, 2 * lda, lda, panel, kgroups, c, tile);
                });
}

// Widening: MR rows (int16) x 8 columns starting at column 8 * c. vpmaddwd leaves (k0k1, k2k3) partial sums of 4
// columns per register; vphaddd folds two registers' pairs into columns [0 1 4 5 | 2 3 6 7], the permute orders them.
template <int MR>
static inline void widen_kernel(const int16_t* a, int64_t lda, const int8_t* panel, int64_t kgroups, int64_t c,
                                int32_t* tile) {
  __m256i acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const int8_t* bc = panel + 32 * c;
  for (int64_t g = 0; g < kgroups; ++g) {
    const __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bc + g * kGroupBytes)));
    const __m256i b1 =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bc + g * kGroupBytes + 16)));
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      int64_t a4;
      std::memcpy(&a4, a + r * lda + 4 * g, 8);
      const __m256i va = _mm256_set1_epi64x(a4);
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(va, b0));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(va, b1));
      __asm__("" : "+x"(acc[r][0]), "+x"(acc[r][1]));
    }
  }
  for (int r = 0; r < MR; ++r) {
    const __m256i h = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][0], acc[r][1]), 0xD8);
    _mm256_store_si256(reinterpret_cast<__m256i*>(tile + r * kPanel + 8 * c), h);
  }
}

static void gemm_widen(const void* a, int64_t lda, int64_t rows, const int8_t* panel, int64_t kgroups, int64_t row0,
                       int64_t col0, int64_t ncols, const Int8Epilogue& e) {
  panel_rows<6>(static_cast<const int16_t*>(a), lda, rows, row0, col0, ncols, e,
                [&](auto mr, const int16_t* ar, int32_t* tile) {
                  for (int64_t c = 0; c < 8; ++c) widen_kernel<decltype(mr)::value>(ar, lda, panel, kgroups, c, tile);
                });
}
#elif FD_TIER == FD_TIER_NEON_DOT
// sdot: MR rows x 16 columns of the panel starting at column 16 * c. A 16-byte load of a row covers 4 groups; sdot by
// lane takes group t's 4 bytes from lane t.
template <int MR>
static inline void sdot_kernel(const int8_t* a, int64_t lda, const int8_t* panel, int64_t kgroups, int64_t c,
                               int32_t* tile) {
  int32x4_t acc[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int i = 0; i < 4; ++i) acc[r][i] = vdupq_n_s32(0);
  const int8_t* bc = panel + 64 * c;
#define FD_SDOT_GROUP(T)                                                                              \
  {                                                                                                   \
    const int8_t* bg = bc + (g + T) * kGroupBytes;                                                    \
    const int8x16_t b0 = vld1q_s8(bg), b1 = vld1q_s8(bg + 16), b2 = vld1q_s8(bg + 32), b3 = vld1q_s8(bg + 48); \
    for (int r = 0; r < MR; ++r) {                                                                    \
      acc[r][0] = vdotq_laneq_s32(acc[r][0], b0, va[r], T);                                           \
      acc[r][1] = vdotq_laneq_s32(acc[r][1], b1, va[r], T);                                           \
      acc[r][2] = vdotq_laneq_s32(acc[r][2], b2, va[r], T);                                           \
      acc[r][3] = vdotq_laneq_s32(acc[r][3], b3, va[r], T);                                           \
    }                                                                                                 \
  }
  int64_t g = 0;
  for (; g + 4 <= kgroups; g += 4) {
    int8x16_t va[MR];
    for (int r = 0; r < MR; ++r) va[r] = vld1q_s8(a + r * lda + 4 * g);
    FD_SDOT_GROUP(0)
    FD_SDOT_GROUP(1)
    FD_SDOT_GROUP(2)
    FD_SDOT_GROUP(3)
  }
  // A GEMM's kgroups is a multiple of 16, but int4's W4A8 multiplies one scale group (group_size / 4 groups) at a
  // time: the rest one group each, its 4 bytes in lane 0 (never loading A or B past the group).
  for (; g < kgroups; ++g) {
    int8x16_t va[MR];
    for (int r = 0; r < MR; ++r) va[r] = vreinterpretq_s8_s32(vdupq_n_s32(load4(a + r * lda + 4 * g)));
    FD_SDOT_GROUP(0)
  }
#undef FD_SDOT_GROUP
  for (int r = 0; r < MR; ++r)
    for (int i = 0; i < 4; ++i) vst1q_s32(tile + r * kPanel + 16 * c + 4 * i, acc[r][i]);
}

static void gemm_sdot(const void* a, int64_t lda, int64_t rows, const int8_t* panel, int64_t kgroups, int64_t row0,
                      int64_t col0, int64_t ncols, const Int8Epilogue& e) {
  // column blocks past ncols (a narrow last panel) are zero padding: skipped, their tile entries never read
  panel_rows<4>(static_cast<const int8_t*>(a), lda, rows, row0, col0, ncols, e,
                [&](auto mr, const int8_t* ar, int32_t* tile) {
                  for (int64_t c = 0; c < (ncols + 15) / 16; ++c)
                    sdot_kernel<decltype(mr)::value>(ar, lda, panel, kgroups, c, tile);
                });
}
#elif FD_TIER == FD_TIER_NEON
// smull/sadalp: MR rows x 8 columns starting at column 8 * c. Per group, 32 panel bytes (8 columns x 4 k) and
// each row's 4 bytes of A broadcast (a0..a3 repeated): smull's 8 products of a half register are 2 columns x 4 k,
// sadalp adds k pairs into int32 lanes (column j's k0+k1, k2+k3, column j+1's ...), addp folds them at the end.
template <int MR>
static inline void smull_kernel(const int8_t* a, int64_t lda, const int8_t* panel, int64_t kgroups, int64_t c,
                                int32_t* tile) {
  int32x4_t acc[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int i = 0; i < 4; ++i) acc[r][i] = vdupq_n_s32(0);
  const int8_t* bc = panel + 32 * c;
  for (int64_t g = 0; g < kgroups; ++g) {
    const int8x16_t b0 = vld1q_s8(bc + g * kGroupBytes), b1 = vld1q_s8(bc + g * kGroupBytes + 16);
    for (int r = 0; r < MR; ++r) {
      const int8x16_t va = vreinterpretq_s8_s32(vdupq_n_s32(load4(a + r * lda + 4 * g)));
      acc[r][0] = vpadalq_s16(acc[r][0], vmull_s8(vget_low_s8(b0), vget_low_s8(va)));
      acc[r][1] = vpadalq_s16(acc[r][1], vmull_high_s8(b0, va));
      acc[r][2] = vpadalq_s16(acc[r][2], vmull_s8(vget_low_s8(b1), vget_low_s8(va)));
      acc[r][3] = vpadalq_s16(acc[r][3], vmull_high_s8(b1, va));
    }
  }
  for (int r = 0; r < MR; ++r) {
    vst1q_s32(tile + r * kPanel + 8 * c, vpaddq_s32(acc[r][0], acc[r][1]));
    vst1q_s32(tile + r * kPanel + 8 * c + 4, vpaddq_s32(acc[r][2], acc[r][3]));
  }
}

static void gemm_smull(const void* a, int64_t lda, int64_t rows, const int8_t* panel, int64_t kgroups, int64_t row0,
                       int64_t col0, int64_t ncols, const Int8Epilogue& e) {
  panel_rows<4>(static_cast<const int8_t*>(a), lda, rows, row0, col0, ncols, e,
                [&](auto mr, const int8_t* ar, int32_t* tile) {
                  for (int64_t c = 0; c < (ncols + 7) / 8; ++c)
                    smull_kernel<decltype(mr)::value>(ar, lda, panel, kgroups, c, tile);
                });
}
#else
static void gemm_scalar(const void* a, int64_t lda, int64_t rows, const int8_t* panel, int64_t kgroups, int64_t row0,
                        int64_t col0, int64_t ncols, const Int8Epilogue& e) {
  panel_rows<1>(static_cast<const int8_t*>(a), lda, rows, row0, col0, ncols, e,
                [&](auto, const int8_t* ar, int32_t* tile) {
                  uint32_t acc[kPanel] = {};
                  for (int64_t g = 0; g < kgroups; ++g) {
                    const int8_t* bg = panel + g * kGroupBytes;
                    const int8_t* ag = ar + 4 * g;
                    for (int64_t j = 0; j < kPanel; ++j)
                      for (int64_t t = 0; t < 4; ++t)
                        acc[j] += static_cast<uint32_t>(static_cast<int32_t>(ag[t]) * bg[4 * j + t]);
                  }
                  for (int64_t j = 0; j < kPanel; ++j) tile[j] = static_cast<int32_t>(acc[j]);
                });
}
#endif

template <DType D>
static inline float load_float(const void* x, int64_t i) {
  if constexpr (D == DType::F32) {
    return static_cast<const float*>(x)[i];
  } else {
    const uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(x)[i]) << 16;
    return __builtin_bit_cast(float, bits);
  }
}

// A row holding NaN or +-inf (|x| bit pattern at or above +inf's): scale NaN, so that every output of the row is NaN
// (as a float linear layer gives), and codes 0. Returns whether the row was one.
static inline bool non_finite_row(uint32_t absmax_bits, int64_t k, int8_t* q8, float* scale) {
  if (absmax_bits < 0x7f800000u) return false;
  *scale = __builtin_nanf("");
  if (k > 0) std::memset(q8, 0, static_cast<size_t>(k));
  return true;
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
static void quantize_row_t(const void* x, int64_t k, int8_t* q8, float* scale) {
  // max of |x| as integer bit patterns: the order of non-negative floats, with NaN above +inf (a float max would
  // skip NaN)
  __m512i vmax = _mm512_setzero_si512();
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  for (int64_t i = 0; i < k; i += 16) {
    const __mmask16 m = k - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (k - i)) - 1);
    vmax = _mm512_max_epi32(vmax, _mm512_and_si512(_mm512_castps_si512(load16<D>(x, i, m)), abs_mask));
  }
  const uint32_t absmax_bits = static_cast<uint32_t>(_mm512_reduce_max_epi32(vmax));
  if (non_finite_row(absmax_bits, k, q8, scale)) return;
  const float s = __builtin_bit_cast(float, absmax_bits) / 127.0f;
  *scale = s;
  const __m512 vs = _mm512_set1_ps(s == 0.0f ? 1.0f : s);  // all-zero row: every code is 0 either way
  const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  for (int64_t i = 0; i < k; i += 16) {
    const __mmask16 m = k - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (k - i)) - 1);
    __m512 q = _mm512_roundscale_ps(_mm512_div_ps(load16<D>(x, i, m), vs),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm512_min_ps(_mm512_max_ps(q, lo), hi);
    _mm_mask_storeu_epi8(q8 + i, m, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q)));
  }
}
#elif FD_TIER == FD_TIER_AVX2
template <DType D>
static inline __m256 load8(const void* x, int64_t i) {
  if constexpr (D == DType::F32) {
    return _mm256_loadu_ps(static_cast<const float*>(x) + i);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(x) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

// |x| maxima as integer bit patterns, as in the AVX-512 version (NaN is not skipped).
template <DType D>
static void quantize_row_t(const void* x, int64_t k, int8_t* q8, float* scale) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  __m256i vmax = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 8 <= k; i += 8)
    vmax = _mm256_max_epi32(_mm256_and_si256(_mm256_castps_si256(load8<D>(x, i)), abs_mask), vmax);
  alignas(32) int32_t m8[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(m8), vmax);
  uint32_t absmax_bits = 0;
  for (int32_t v : m8) absmax_bits = std::max(absmax_bits, static_cast<uint32_t>(v));
  for (; i < k; ++i)
    absmax_bits = std::max(absmax_bits, __builtin_bit_cast(uint32_t, load_float<D>(x, i)) & 0x7fffffffu);
  if (non_finite_row(absmax_bits, k, q8, scale)) return;
  const float s = __builtin_bit_cast(float, absmax_bits) / 127.0f;
  *scale = s;
  const float div = s == 0.0f ? 1.0f : s;  // all-zero row: every code is 0 either way
  const __m256 vs = _mm256_set1_ps(div), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  for (i = 0; i + 8 <= k; i += 8) {
    __m256 q = _mm256_round_ps(_mm256_div_ps(load8<D>(x, i), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm256_min_ps(_mm256_max_ps(q, lo), hi);
    const __m256i w = _mm256_cvtps_epi32(q);
    const __m128i h = _mm_packs_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q8 + i), _mm_packs_epi16(h, h));
  }
  for (; i < k; ++i)
    q8[i] = static_cast<int8_t>(std::fmin(std::fmax(std::nearbyint(load_float<D>(x, i) / div), -127.0f), 127.0f));
}
#elif FD_TIER >= FD_TIER_NEON
template <DType D>
static inline float32x4_t load4f(const void* x, int64_t i) {
  if constexpr (D == DType::F32) return vld1q_f32(static_cast<const float*>(x) + i);
  else return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(static_cast<const uint16_t*>(x) + i), 16));
}

// |x| maxima as integer bit patterns, as in the AVX-512 version (NaN is not skipped); frintn rounds half to even
// like nearbyint in the default rounding mode.
template <DType D>
static void quantize_row_t(const void* x, int64_t k, int8_t* q8, float* scale) {
  const uint32x4_t abs_mask = vdupq_n_u32(0x7fffffffu);
  uint32x4_t vmax = vdupq_n_u32(0);
  int64_t i = 0;
  for (; i + 4 <= k; i += 4) vmax = vmaxq_u32(vmax, vandq_u32(vreinterpretq_u32_f32(load4f<D>(x, i)), abs_mask));
  uint32_t absmax_bits = vmaxvq_u32(vmax);
  for (; i < k; ++i)
    absmax_bits = std::max(absmax_bits, __builtin_bit_cast(uint32_t, load_float<D>(x, i)) & 0x7fffffffu);
  if (non_finite_row(absmax_bits, k, q8, scale)) return;
  const float s = __builtin_bit_cast(float, absmax_bits) / 127.0f;
  *scale = s;
  const float div = s == 0.0f ? 1.0f : s;  // all-zero row: every code is 0 either way
  const float32x4_t vs = vdupq_n_f32(div), lo = vdupq_n_f32(-127.0f), hi = vdupq_n_f32(127.0f);
  auto codes4 = [&](int64_t at) {
    const float32x4_t q = vminq_f32(vmaxq_f32(vrndnq_f32(vdivq_f32(load4f<D>(x, at), vs)), lo), hi);
    return vmovn_s32(vcvtq_s32_f32(q));  // integral values in [-127, 127]: exact
  };
  for (i = 0; i + 8 <= k; i += 8) vst1_s8(q8 + i, vmovn_s16(vcombine_s16(codes4(i), codes4(i + 4))));
  for (; i < k; ++i)
    q8[i] = static_cast<int8_t>(std::fmin(std::fmax(std::nearbyint(load_float<D>(x, i) / div), -127.0f), 127.0f));
}
#else
template <DType D>
static void quantize_row_t(const void* x, int64_t k, int8_t* q8, float* scale) {
  uint32_t absmax_bits = 0;  // as in the AVX-512 version: NaN is not skipped
  for (int64_t i = 0; i < k; ++i)
    absmax_bits = std::max(absmax_bits, __builtin_bit_cast(uint32_t, load_float<D>(x, i)) & 0x7fffffffu);
  if (non_finite_row(absmax_bits, k, q8, scale)) return;
  const float s = __builtin_bit_cast(float, absmax_bits) / 127.0f;
  *scale = s;
  const float div = s == 0.0f ? 1.0f : s;
  for (int64_t i = 0; i < k; ++i)
    q8[i] = static_cast<int8_t>(std::fmin(std::fmax(std::nearbyint(load_float<D>(x, i) / div), -127.0f), 127.0f));
}
#endif

static void quantize_row(const void* x, DType dt, int64_t k, int8_t* q, float* scale) {
  if (dt == DType::F32) quantize_row_t<DType::F32>(x, k, q, scale);
  else quantize_row_t<DType::BF16>(x, k, q, scale);
}

}  // namespace FD_TIER_NS

template <>
const Int8Leaves& tier_leaves<Int8Leaves, FD_TIER_SIMD>() {
  using namespace FD_TIER_NS;
#if FD_TIER == FD_TIER_AVX512
  static constexpr Int8Gemm fast{"avx512-vnni", 1, true, true, prepare_u8_shifted, gemm_vnni}, exact = fast;
#elif FD_TIER == FD_TIER_AVX2
  static constexpr Int8Gemm fast{"avx2-sign", 2, false, true, prepare_s8_abs, gemm_sign};
  static constexpr Int8Gemm exact{"avx2-widen", 2, false, false, prepare_s16, gemm_widen};
#elif FD_TIER == FD_TIER_NEON_DOT
  static constexpr Int8Gemm fast{"neon-sdot", 1, false, true, prepare_s8, gemm_sdot}, exact = fast;
#elif FD_TIER == FD_TIER_NEON
  static constexpr Int8Gemm fast{"neon-smull", 1, false, true, prepare_s8, gemm_smull}, exact = fast;
#else
  static constexpr Int8Gemm fast{"scalar", 1, false, true, prepare_s8, gemm_scalar}, exact = fast;
#endif
  static constexpr Int8Leaves t{fast, exact, quantize_row, store_tile};
  return t;
}
}  // namespace fd
