// Leaf kernels of the int4 linear layer, compiled once per SIMD tier (int4_scalar.cpp, x86/int4_avx2.cpp,
// x86/int4_avx512.cpp; see core.h). The packed layout is described in int4.h.
//
// Unpacking (llama.cpp's q4 trick): a 32-byte chunk's low nibbles are fields 0..31, its high nibbles fields 32..63,
// so `and 0x0f` and `(shift 4) and 0x0f` give the 64 fields of 16 columns x 4 k in the VNNI order.
// * W4A8: the fields are the unsigned operand of the int8 dot product and the int8 activations the signed one:
//   sum (code + 8) * q = sum code * q + 8 * sum q; the leaf subtracts corr = 8 * sum q per row and group.
//   avx512: vpdpbusd, 6 rows x 64 columns in 24 zmm accumulators per group. avx2 (no VNNI needed): vpmaddubsw
//   (pair sums <= 2 * 15 * 127, no saturation) then vpmaddwd by ones, 4 rows x 16 columns.
// * W4A16: fields - 8 widened to fp32 in registers; each accumulator lane holds one column's partial sum over one of
//   the 4 k of a group of 4 (x broadcast as x[4t..4t+3] repeated), folded into column sums once per scale group.
// * scalar: plain loops over the same layout.
// Per scale group g the int32 (W4A8) or fp32 (W4A16) group sums are scaled by scale[n, g] and added to a per-row
// fp32 result; the last group's store applies the row scale (W4A8) and the bias.
//
// Expects, before inclusion: "int4_isa.h", then the tier header (FD_TIER, FD_TIER_NS, FD_TIER_SIMD).

namespace fd {
namespace FD_TIER_NS {

static inline int32_t load4_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// The result row (64 floats of the panel, 64-byte aligned) -> the output columns.
static inline void store_row(const float* res, int64_t row, const Int4Panel& p, const Int4Out& o) {
  float* out = o.out + row * o.ldo + p.col0;
  const float rs = o.row_scale ? o.row_scale[row] : 1.0f;
  const float* b = o.bias ? o.bias + p.col0 : nullptr;
  for (int64_t j = 0; j < p.ncols; ++j) {
    const float v = o.row_scale ? res[j] * rs : res[j];
    out[j] = b ? v + b[j] : v;
  }
}

#if FD_TIER == FD_TIER_AVX512
static inline __m512i unpack64(const uint8_t* chunk) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(chunk));
  const __m256i nib = _mm256_set1_epi8(0x0f);
  const __m256i lo = _mm256_and_si256(v, nib);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nib);
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

constexpr int kA8Rows = 6;

// The 4 x 64 fields of one group of 4 k: unpacked from the panel, or read from a copy unpacked once (kUnpacked).
template <bool kUnpacked>
static inline __m512i field_vector(const uint8_t* src, int64_t t, int i) {
  if constexpr (kUnpacked) {
    return _mm512_loadu_si512(src + t * 2 * kInt4GroupBytes + 64 * i);
  } else {
    return unpack64(src + t * kInt4GroupBytes + 32 * i);
  }
}

// The panel's fields as bytes (2 * kInt4GroupBytes per group of 4 k), for row ranges long enough to reuse them.
static void unpack_panel(const Int4Panel& p, uint8_t* dst) {
  for (int64_t t = 0; t < p.groups * p.gk; ++t)
    for (int i = 0; i < 4; ++i)
      _mm512_storeu_si512(dst + t * 2 * kInt4GroupBytes + 64 * i, unpack64(p.codes + t * kInt4GroupBytes + 32 * i));
}

// One scale group's int32 dot products of MR rows with the panel's 64 columns -> tile (MR x 64). The accumulators
// live in registers for the whole group (the int8 GEMM's microkernel shape: 24 zmm, 4 field vectors, a broadcast);
// noinline: inlined into its caller, GCC 12 also kept a stack copy of every accumulator, updated each step (1.9x).
template <int MR, bool kUnpacked>
__attribute__((noinline)) static void group_dots(const int8_t* qg, int64_t ldq, const uint8_t* cg, int64_t gk, int32_t* tile) {
  __m512i acc[MR][4];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r)
    for (int i = 0; i < 4; ++i) acc[r][i] = _mm512_setzero_si512();
  for (int64_t t = 0; t < gk; ++t) {
    const __m512i w0 = field_vector<kUnpacked>(cg, t, 0), w1 = field_vector<kUnpacked>(cg, t, 1);
    const __m512i w2 = field_vector<kUnpacked>(cg, t, 2), w3 = field_vector<kUnpacked>(cg, t, 3);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m512i a = _mm512_set1_epi32(load4_i32(qg + r * ldq + 4 * t));
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], w0, a);
      acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], w1, a);
      acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], w2, a);
      acc[r][3] = _mm512_dpbusd_epi32(acc[r][3], w3, a);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r)
    for (int i = 0; i < 4; ++i) _mm512_store_si512(tile + r * kInt4Panel + 16 * i, acc[r][i]);
}

template <int MR, bool kUnpacked>
static void a8_block(const int8_t* q, int64_t ldq, const int32_t* corr, const Int4Panel& p, const uint8_t* src,
                     float* res) {
  alignas(64) int32_t tile[MR * kInt4Panel];
  for (int r = 0; r < MR; ++r)
    for (int i = 0; i < 4; ++i) _mm512_store_ps(res + r * kInt4Panel + 16 * i, _mm512_setzero_ps());
  const int64_t step = kUnpacked ? 2 * kInt4GroupBytes : kInt4GroupBytes;
  for (int64_t g = 0; g < p.groups; ++g) {
    group_dots<MR, kUnpacked>(q + g * p.gk * 4, ldq, src + g * p.gk * step, p.gk, tile);
    const float* sg = p.scales + g * kInt4Panel;
    for (int r = 0; r < MR; ++r) {
      const __m512i c = _mm512_set1_epi32(corr[r * p.groups + g]);
      for (int i = 0; i < 4; ++i) {
        float* rr = res + r * kInt4Panel + 16 * i;
        const __m512i dot = _mm512_sub_epi32(_mm512_load_si512(tile + r * kInt4Panel + 16 * i), c);
        _mm512_store_ps(rr, _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_loadu_ps(sg + 16 * i),
                                            _mm512_load_ps(rr)));
      }
    }
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

constexpr int kA8Rows = 2;  // 16 ymm: 4 int32 + 4 int16 accumulators, 2 field vectors, a broadcast, the ones
// vpmaddubsw pair sums are at most 2 * 15 * 127 = 3810 in magnitude: 8 of them fit int16 before widening.
constexpr int64_t kI16Steps = 8;

template <bool kUnpacked>
static inline void fields(const uint8_t* src, int64_t t, int64_t i, __m256i* w0, __m256i* w1) {
  if constexpr (kUnpacked) {
    const uint8_t* u = src + t * 2 * kInt4GroupBytes + 64 * i;
    *w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(u));
    *w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(u + 32));
  } else {
    unpack32x2(src + t * kInt4GroupBytes + 32 * i, w0, w1);
  }
}

static void unpack_panel(const Int4Panel& p, uint8_t* dst) {
  for (int64_t t = 0; t < p.groups * p.gk; ++t)
    for (int i = 0; i < 4; ++i) {
      __m256i lo, hi;
      unpack32x2(p.codes + t * kInt4GroupBytes + 32 * i, &lo, &hi);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + t * 2 * kInt4GroupBytes + 64 * i), lo);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + t * 2 * kInt4GroupBytes + 64 * i + 32), hi);
    }
}

// One scale group of one 16-column chunk: MR rows' int32 dot products -> tile (MR x 16). noinline: see the
// avx512 group_dots.
template <int MR, bool kUnpacked>
__attribute__((noinline)) static void group_dots(const int8_t* qg, int64_t ldq, const uint8_t* cg, int64_t gk,
                                                 int64_t i, int32_t* tile) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  for (int64_t t0 = 0; t0 < gk; t0 += kI16Steps) {
    __m256i s16[MR][2];
    for (int r = 0; r < MR; ++r) s16[r][0] = s16[r][1] = _mm256_setzero_si256();
    const int64_t t1 = std::min(gk, t0 + kI16Steps);
    for (int64_t t = t0; t < t1; ++t) {
      __m256i w0, w1;
      fields<kUnpacked>(cg, t, i, &w0, &w1);
      for (int r = 0; r < MR; ++r) {
        const __m256i a = _mm256_set1_epi32(load4_i32(qg + r * ldq + 4 * t));
        s16[r][0] = _mm256_add_epi16(s16[r][0], _mm256_maddubs_epi16(w0, a));
        s16[r][1] = _mm256_add_epi16(s16[r][1], _mm256_maddubs_epi16(w1, a));
      }
    }
    for (int r = 0; r < MR; ++r) {
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(s16[r][0], ones));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(s16[r][1], ones));
    }
  }
  for (int r = 0; r < MR; ++r) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(tile + 16 * r), acc[r][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(tile + 16 * r + 8), acc[r][1]);
  }
}

template <int MR, bool kUnpacked>
static void a8_block(const int8_t* q, int64_t ldq, const int32_t* corr, const Int4Panel& p, const uint8_t* src,
                     float* res) {
  alignas(32) int32_t tile[MR * 16];
  const int64_t step = kUnpacked ? 2 * kInt4GroupBytes : kInt4GroupBytes;
  for (int64_t i = 0; i < 4; ++i) {  // 16-column chunk
    for (int r = 0; r < MR; ++r) {
      _mm256_store_ps(res + r * kInt4Panel + 16 * i, _mm256_setzero_ps());
      _mm256_store_ps(res + r * kInt4Panel + 16 * i + 8, _mm256_setzero_ps());
    }
    for (int64_t g = 0; g < p.groups; ++g) {
      group_dots<MR, kUnpacked>(q + g * p.gk * 4, ldq, src + g * p.gk * step, p.gk, i, tile);
      const float* sg = p.scales + g * kInt4Panel + 16 * i;
      for (int r = 0; r < MR; ++r) {
        const __m256i c = _mm256_set1_epi32(corr[r * p.groups + g]);
        for (int h = 0; h < 2; ++h) {
          float* rr = res + r * kInt4Panel + 16 * i + 8 * h;
          const __m256i dot = _mm256_load_si256(reinterpret_cast<const __m256i*>(tile + 16 * r + 8 * h));
          const __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(dot, c));
          _mm256_store_ps(rr, _mm256_fmadd_ps(f, _mm256_loadu_ps(sg + 8 * h), _mm256_load_ps(rr)));
        }
      }
    }
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

constexpr int kA8Rows = 1;

template <int MR, bool kUnpacked>
static void a8_block(const int8_t* q, int64_t ldq, const int32_t* corr, const Int4Panel& p, const uint8_t* src,
                     float* res) {
  static_assert(MR == 1 && !kUnpacked, "the scalar kernel runs one row at a time on the packed fields");
  (void)ldq;
  (void)src;
  for (int64_t c = 0; c < kInt4Panel; ++c) res[c] = 0.0f;
  for (int64_t g = 0; g < p.groups; ++g) {
    for (int64_t c = 0; c < kInt4Panel; ++c) {
      const uint8_t* chunk = p.codes + g * p.gk * kInt4GroupBytes + 32 * (c / 16);
      int32_t dot = 0;
      for (int64_t t = 0; t < p.gk; ++t)
        for (int kk = 0; kk < 4; ++kk)
          dot += field(chunk + t * kInt4GroupBytes, static_cast<int>(4 * (c % 16) + kk)) * q[4 * (g * p.gk + t) + kk];
      res[c] += static_cast<float>(dot - corr[g]) * p.scales[g * kInt4Panel + c];
    }
  }
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

// Rows in blocks of the tier's row count, then the remaining rows in one smaller block.
template <bool kUnpacked>
static void a8_blocks(const int8_t* q, int64_t ldq, const int32_t* corr, int64_t rows, int64_t row0,
                      const Int4Panel& p, const uint8_t* src, const Int4Out& o) {
  alignas(64) float res[kA8Rows * kInt4Panel];
  int64_t r = 0;
  for (; r + kA8Rows <= rows; r += kA8Rows) {
    a8_block<kA8Rows, kUnpacked>(q + r * ldq, ldq, corr + r * p.groups, p, src, res);
    for (int i = 0; i < kA8Rows; ++i) store_row(res + i * kInt4Panel, row0 + r + i, p, o);
  }
  const int64_t rem = rows - r;
  if (rem == 0) return;
#if FD_TIER != FD_TIER_SCALAR
  const int8_t* qr = q + r * ldq;
  const int32_t* cr = corr + r * p.groups;
#endif
#if FD_TIER == FD_TIER_AVX512
  switch (rem) {
    case 1: a8_block<1, kUnpacked>(qr, ldq, cr, p, src, res); break;
    case 2: a8_block<2, kUnpacked>(qr, ldq, cr, p, src, res); break;
    case 3: a8_block<3, kUnpacked>(qr, ldq, cr, p, src, res); break;
    case 4: a8_block<4, kUnpacked>(qr, ldq, cr, p, src, res); break;
    default: a8_block<5, kUnpacked>(qr, ldq, cr, p, src, res); break;
  }
#elif FD_TIER == FD_TIER_AVX2
  a8_block<1, kUnpacked>(qr, ldq, cr, p, src, res);
#endif
  for (int64_t i = 0; i < rem; ++i) store_row(res + i * kInt4Panel, row0 + r + i, p, o);
}

// Long row ranges unpack the panel once (tens of KB: L1/L2) instead of once per block of rows.
static void a8_rows(const int8_t* q, int64_t ldq, const int32_t* corr, int64_t rows, int64_t row0, const Int4Panel& p,
                    const Int4Out& o) {
#if FD_TIER != FD_TIER_SCALAR
  if (rows > 2 * kA8Rows) {
    std::vector<uint8_t> unpacked(static_cast<size_t>(p.groups * p.gk * 2 * kInt4GroupBytes));
    unpack_panel(p, unpacked.data());
    a8_blocks<true>(q, ldq, corr, rows, row0, p, unpacked.data(), o);
    return;
  }
#endif
  a8_blocks<false>(q, ldq, corr, rows, row0, p, p.codes, o);
}

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
  static constexpr Int4Leaves t{FD_TIER_NS::a8_rows, FD_TIER_NS::a16_rows};
  return t;
}
}  // namespace fd
