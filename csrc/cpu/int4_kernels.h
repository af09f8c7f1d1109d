// Leaf kernels of the int4 linear layer, compiled once per SIMD tier (int4_scalar.cpp, x86/int4_avx2.cpp,
// x86/int4_avx512.cpp; see core.h). The packed layout is described in int4.h.
//
// Unpacking (llama.cpp's q4 trick): a 32-byte chunk's low nibbles are fields 0..31, its high nibbles fields 32..63,
// so `and 0x0f` and `(shift 4) and 0x0f` give the 64 fields of 16 columns x 4 k in the VNNI order.
// * W4A8 runs on the int8 GEMM (int8_isa.h): unpack_codes writes a scale group's codes (fields - 8) as an int8 panel
//   in the GEMM's own layout, the GEMM's panel leaf multiplies it (its epilogue subtracts the group's shift
//   compensation and stores int32), and accumulate adds the group's sums, times the group's scales, to the fp32
//   result. The int8 GEMM's tiers (VNNI, the avx2 kernels, scalar) serve int4 as they are.
// * W4A16: fields - 8 widened to fp32 in registers; each accumulator lane holds one column's partial sum over one of
//   the 4 k of a group of 4 (x broadcast as x[4t..4t+3] repeated), folded into column sums once per scale group,
//   then scaled by scale[n, g] and added to a per-row fp32 result stored (+ bias) after the last group.
// * scalar: plain loops over the same layout.
//
// Expects, before inclusion: "int4_isa.h", then the tier header (FD_TIER, FD_TIER_NS, FD_TIER_SIMD).

namespace fd {
namespace FD_TIER_NS {

// The result row (64 floats of the panel, 64-byte aligned) -> the output columns (+ bias).
static inline void store_row(const float* res, int64_t row, const Int4Panel& p, const Int4Out& o) {
  float* out = o.out + row * o.ldo + p.col0;
  const float* b = o.bias ? o.bias + p.col0 : nullptr;
  for (int64_t j = 0; j < p.ncols; ++j) out[j] = b ? res[j] + b[j] : res[j];
}

#if FD_TIER == FD_TIER_AVX512
static inline __m512i unpack64(const uint8_t* chunk) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(chunk));
  const __m256i nib = _mm256_set1_epi8(0x0f);
  const __m256i lo = _mm256_and_si256(v, nib);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

static void unpack_codes(const uint8_t* codes, int64_t kgroups, int8_t* dst) {
  const __m512i eight = _mm512_set1_epi8(8);
  for (int64_t c = 0; c < kgroups * 4; ++c)
    _mm512_storeu_si512(dst + 64 * c, _mm512_sub_epi8(unpack64(codes + 32 * c), eight));
}

static void accumulate(const int32_t* tile, int64_t rows, const float* scale, float* res) {
  const __m512 s0 = _mm512_loadu_ps(scale), s1 = _mm512_loadu_ps(scale + 16);
  const __m512 s2 = _mm512_loadu_ps(scale + 32), s3 = _mm512_loadu_ps(scale + 48);
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* t = tile + r * kInt4Panel;
    float* o = res + r * kInt4Panel;
    _mm512_storeu_ps(o, _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(t)), s0, _mm512_loadu_ps(o)));
    _mm512_storeu_ps(o + 16, _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(t + 16)), s1,
                                             _mm512_loadu_ps(o + 16)));
    _mm512_storeu_ps(o + 32, _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(t + 32)), s2,
                                             _mm512_loadu_ps(o + 32)));
    _mm512_storeu_ps(o + 48, _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(t + 48)), s3,
                                             _mm512_loadu_ps(o + 48)));
  }
}

constexpr int kA16Rows = 6;

// Sums of 4 accumulators holding (column c: the 4 k lanes) for columns 0-3, 4-7, 8-11, 12-15 -> 16 column sums.
static inline __m512 fold_columns(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
  const __m512 s01 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
  const __m512 s23 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
  const __m512 v = _mm512_add_ps(_mm512_shuffle_ps(s01, s23, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_ps(s01, s23, _MM_SHUFFLE(3, 2, 3, 2)));
  // lane 4j + i holds column 4i + j
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(order, v);
}

// One scale group of one 16-column chunk: MR rows' fp32 dot products (fields - 8) -> 16 column sums per row.
template <int MR>
__attribute__((noinline)) static void group_fmas(const float* xg, int64_t ldx, const uint8_t* cg, int64_t gk,
                                                 float* sums) {
  const __m512i eight = _mm512_set1_epi8(8);
  __m512 acc[MR][4];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_ps();
  for (int64_t t = 0; t < gk; ++t) {
    const __m512i w8 = _mm512_sub_epi8(unpack64(cg + t * kInt4GroupBytes), eight);
    const __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(w8, 0)));
    const __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(w8, 1)));
    const __m512 w2 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(w8, 2)));
    const __m512 w3 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(w8, 3)));
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m512 xb = _mm512_broadcast_f32x4(_mm_loadu_ps(xg + r * ldx + 4 * t));
      acc[r][0] = _mm512_fmadd_ps(w0, xb, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(w1, xb, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(w2, xb, acc[r][2]);
      acc[r][3] = _mm512_fmadd_ps(w3, xb, acc[r][3]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) _mm512_store_ps(sums + 16 * r, fold_columns(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
}

template <int MR>
static void a16_block(const float* x, int64_t ldx, const Int4Panel& p, float* res) {
  alignas(64) float sums[MR * 16];
  for (int64_t i = 0; i < 4; ++i) {  // 16-column chunk
    for (int r = 0; r < MR; ++r) _mm512_store_ps(res + r * kInt4Panel + 16 * i, _mm512_setzero_ps());
    for (int64_t g = 0; g < p.groups; ++g) {
      group_fmas<MR>(x + g * p.gk * 4, ldx, p.codes + g * p.gk * kInt4GroupBytes + 32 * i, p.gk, sums);
      const __m512 s = _mm512_loadu_ps(p.scales + g * kInt4Panel + 16 * i);
      for (int r = 0; r < MR; ++r) {
        float* rr = res + r * kInt4Panel + 16 * i;
        _mm512_store_ps(rr, _mm512_fmadd_ps(_mm512_load_ps(sums + 16 * r), s, _mm512_load_ps(rr)));
      }
    }
  }
}
#elif FD_TIER == FD_TIER_AVX2
// The low and high nibbles of a 32-byte chunk: fields 0..31 (columns 0-7) and 32..63 (columns 8-15).
static inline void unpack32x2(const uint8_t* chunk, __m256i* lo, __m256i* hi) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(chunk));
  const __m256i nib = _mm256_set1_epi8(0x0f);
  *lo = _mm256_and_si256(v, nib);
  *hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);
}

static void unpack_codes(const uint8_t* codes, int64_t kgroups, int8_t* dst) {
  const __m256i eight = _mm256_set1_epi8(8);
  for (int64_t c = 0; c < kgroups * 4; ++c) {
    __m256i lo, hi;
    unpack32x2(codes + 32 * c, &lo, &hi);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 64 * c), _mm256_sub_epi8(lo, eight));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 64 * c + 32), _mm256_sub_epi8(hi, eight));
  }
}

static void accumulate(const int32_t* tile, int64_t rows, const float* scale, float* res) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < kInt4Panel; j += 8) {
      const __m256 f = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile + r * kInt4Panel + j)));
      float* o = res + r * kInt4Panel + j;
      _mm256_storeu_ps(o, _mm256_fmadd_ps(f, _mm256_loadu_ps(scale + j), _mm256_loadu_ps(o)));
    }
}

constexpr int kA16Rows = 2;

// Sums of 4 accumulators holding (column c: the 4 k lanes) for columns 0-1, 2-3, 4-5, 6-7 -> 8 column sums.
static inline __m256 fold_columns(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));  // lane L: cols L, 2+L, 4+L, 6+L
  return _mm256_permutevar8x32_ps(h, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

template <int MR>
static void a16_block(const float* x, int64_t ldx, const Int4Panel& p, float* res) {
  const __m256i eight = _mm256_set1_epi8(8);
  for (int64_t h = 0; h < 8; ++h) {  // 8-column eighth: chunk h / 2, low (fields 0-31) or high (32-63) nibbles
    for (int r = 0; r < MR; ++r) _mm256_store_ps(res + r * kInt4Panel + 8 * h, _mm256_setzero_ps());
    for (int64_t g = 0; g < p.groups; ++g) {
      __m256 acc[MR][4];
      for (int r = 0; r < MR; ++r)
        for (int j = 0; j < 4; ++j) acc[r][j] = _mm256_setzero_ps();
      const uint8_t* cg = p.codes + g * p.gk * kInt4GroupBytes + 32 * (h / 2);
      const float* xg = x + g * p.gk * 4;
      for (int64_t t = 0; t < p.gk; ++t) {
        __m256i lo, hi;
        unpack32x2(cg + t * kInt4GroupBytes, &lo, &hi);
        const __m256i w8 = _mm256_sub_epi8(h % 2 ? hi : lo, eight);
        const __m128i w_lo = _mm256_castsi256_si128(w8), w_hi = _mm256_extracti128_si256(w8, 1);
        __m256 w[4];
        w[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(w_lo));
        w[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(w_lo, 8)));
        w[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(w_hi));
        w[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(w_hi, 8)));
        for (int r = 0; r < MR; ++r) {
          const __m256 xb = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(xg + r * ldx + 4 * t));
          for (int j = 0; j < 4; ++j) acc[r][j] = _mm256_fmadd_ps(w[j], xb, acc[r][j]);
        }
      }
      const __m256 s = _mm256_loadu_ps(p.scales + g * kInt4Panel + 8 * h);
      for (int r = 0; r < MR; ++r) {
        float* rr = res + r * kInt4Panel + 8 * h;
        const __m256 sums = fold_columns(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
        _mm256_store_ps(rr, _mm256_fmadd_ps(sums, s, _mm256_load_ps(rr)));
      }
    }
  }
}
#else
static inline int field(const uint8_t* chunk, int v) {
  const uint8_t b = chunk[v & 31];
  return v < 32 ? (b & 0x0f) : (b >> 4);
}

static void unpack_codes(const uint8_t* codes, int64_t kgroups, int8_t* dst) {
  for (int64_t c = 0; c < kgroups * 4; ++c)
    for (int v = 0; v < 64; ++v) dst[64 * c + v] = static_cast<int8_t>(field(codes + 32 * c, v) - 8);
}

static void accumulate(const int32_t* tile, int64_t rows, const float* scale, float* res) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < kInt4Panel; ++j)
      res[r * kInt4Panel + j] += static_cast<float>(tile[r * kInt4Panel + j]) * scale[j];
}

constexpr int kA16Rows = 1;

template <int MR>
static void a16_block(const float* x, int64_t ldx, const Int4Panel& p, float* res) {
  static_assert(MR == 1, "the scalar kernel runs one row at a time");
  (void)ldx;
  for (int64_t c = 0; c < kInt4Panel; ++c) res[c] = 0.0f;
  for (int64_t g = 0; g < p.groups; ++g) {
    for (int64_t c = 0; c < kInt4Panel; ++c) {
      const uint8_t* chunk = p.codes + g * p.gk * kInt4GroupBytes + 32 * (c / 16);
      float sum = 0.0f;
      for (int64_t t = 0; t < p.gk; ++t)
        for (int kk = 0; kk < 4; ++kk)
          sum += x[4 * (g * p.gk + t) + kk] *
                 static_cast<float>(field(chunk + t * kInt4GroupBytes, static_cast<int>(4 * (c % 16) + kk)) - 8);
      res[c] += sum * p.scales[g * kInt4Panel + c];
    }
  }
}
#endif

static void a16_rows(const float* x, int64_t ldx, int64_t rows, int64_t row0, const Int4Panel& p, const Int4Out& o) {
  alignas(64) float res[kA16Rows * kInt4Panel];
  int64_t r = 0;
  for (; r + kA16Rows <= rows; r += kA16Rows) {
    a16_block<kA16Rows>(x + r * ldx, ldx, p, res);
    for (int i = 0; i < kA16Rows; ++i) store_row(res + i * kInt4Panel, row0 + r + i, p, o);
  }
  for (; r < rows; ++r) {
    a16_block<1>(x + r * ldx, ldx, p, res);
    store_row(res, row0 + r, p, o);
  }
}

}  // namespace FD_TIER_NS

template <>
const Int4Leaves& tier_leaves<Int4Leaves, FD_TIER_SIMD>() {
  static constexpr Int4Leaves t{FD_TIER_NS::unpack_codes, FD_TIER_NS::accumulate, FD_TIER_NS::a16_rows};
  return t;
}
}  // namespace fd
