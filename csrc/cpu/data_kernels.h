// Leaf kernels of the data-compression ops (see data.h for what each computes), compiled once per SIMD tier
// (cpu/data_scalar.cpp, cpu/x86/data_avx2.cpp, cpu/x86/data_avx512.cpp; see core.h).
//
// * Assignment: a register-tiled fp32 GEMM microkernel (avx512: 12 rows x 32 centroids in 24 zmm accumulators;
//   avx2: 6 x 16 in 12 ymm; scalar: plain loops) writes ||c||^2 - 2 x.c for one row tile against every centroid
//   panel into a small tile (12 x kpad floats, L1-resident at k = 256), then a vector argmin scans each tile row.
//   ||x||^2 is added to the winner only: it does not change the argmin.
// * Quantize / dequantize / delta codes: plain loops the compiler vectorizes, with the library's quantization
//   arithmetic (true fp32 quotient, clamp, round half-to-even by adding and subtracting 1.5 * 2^23), so codes equal
//   the pure-torch reference bit for bit. Products and sums are rounded one at a time as the reference rounds
//   them: no contraction into fused multiply-adds in this file (the microkernel's FMAs are explicit intrinsics).
// * Bin codes: a branchless binary search over 255 (+inf padded) edges per value.
//
// Expects, before inclusion: cpu/data_isa.h and the tier header (FD_TIER, FD_TIER_NS, FD_TIER_SIMD).
#include <cfloat>
#include <cmath>
#include <cstdint>

#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")

namespace fd {
namespace data {
namespace FD_TIER_NS {

#if FD_TIER == FD_TIER_AVX512
constexpr int64_t NR = 32, MR = 12;
#elif FD_TIER == FD_TIER_AVX2
constexpr int64_t NR = 16, MR = 6;
#else
constexpr int64_t NR = 8, MR = 4;
#endif

constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: (v + kRound) - kRound rounds |v| < 2^22 half-to-even

static inline bool finite(float v) { return std::fabs(v) <= FLT_MAX; }  // false for NaN and +-inf

// ---------------------------------------------------------------------------------------------- assignment

// tile[r * ldt + j] = cnorm[j] - 2 x_r . c_j for R rows of x (stride d) and one panel of NR centroids.
template <int R>
static inline void panel_dists(const float* x, int64_t d, const float* panel, const float* cn, float* tile,
                               int64_t ldt) {
// (Every loop over the R rows is fully unrolled, so the accumulators live in registers, never in a stack array.)
#if FD_TIER == FD_TIER_AVX512
  __m512 acc0[R], acc1[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  for (int64_t q = 0; q < d; ++q) {
    const __m512 b0 = _mm512_loadu_ps(panel + q * NR), b1 = _mm512_loadu_ps(panel + q * NR + 16);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(x[r * d + q]);
      acc0[r] = _mm512_fmadd_ps(a, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(a, b1, acc1[r]);
    }
  }
  const __m512 m2 = _mm512_set1_ps(-2.0f), c0 = _mm512_loadu_ps(cn), c1 = _mm512_loadu_ps(cn + 16);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_ps(tile + r * ldt, _mm512_fmadd_ps(acc0[r], m2, c0));
    _mm512_storeu_ps(tile + r * ldt + 16, _mm512_fmadd_ps(acc1[r], m2, c1));
  }
#elif FD_TIER == FD_TIER_AVX2
  __m256 acc0[R], acc1[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
  for (int64_t q = 0; q < d; ++q) {
    const __m256 b0 = _mm256_loadu_ps(panel + q * NR), b1 = _mm256_loadu_ps(panel + q * NR + 8);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_broadcast_ss(x + r * d + q);
      acc0[r] = _mm256_fmadd_ps(a, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(a, b1, acc1[r]);
    }
  }
  const __m256 m2 = _mm256_set1_ps(-2.0f), c0 = _mm256_loadu_ps(cn), c1 = _mm256_loadu_ps(cn + 8);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(tile + r * ldt, _mm256_fmadd_ps(acc0[r], m2, c0));
    _mm256_storeu_ps(tile + r * ldt + 8, _mm256_fmadd_ps(acc1[r], m2, c1));
  }
#else
  float acc[R][NR] = {};
  for (int64_t q = 0; q < d; ++q)
    for (int r = 0; r < R; ++r)
      for (int64_t j = 0; j < NR; ++j) acc[r][j] += x[r * d + q] * panel[q * NR + j];
  for (int r = 0; r < R; ++r)
    for (int64_t j = 0; j < NR; ++j) tile[r * ldt + j] = cn[j] - 2.0f * acc[r][j];
#endif
}

// Index of the first minimum of v[0, n) (n a multiple of NR) and the minimum itself.
static inline int64_t argmin(const float* v, int64_t n, float* best) {
#if FD_TIER == FD_TIER_AVX512
  __m512 bv = _mm512_loadu_ps(v);
  __m512i bi = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i idx = bi;
  const __m512i step = _mm512_set1_epi32(16);
  for (int64_t j = 16; j < n; j += 16) {
    idx = _mm512_add_epi32(idx, step);
    const __m512 x = _mm512_loadu_ps(v + j);
    const __mmask16 lt = _mm512_cmp_ps_mask(x, bv, _CMP_LT_OQ);  // strict: each lane keeps its first minimum
    bv = _mm512_mask_mov_ps(bv, lt, x);
    bi = _mm512_mask_mov_epi32(bi, lt, idx);
  }
  const float m = _mm512_reduce_min_ps(bv);
  const __mmask16 eq = _mm512_cmp_ps_mask(bv, _mm512_set1_ps(m), _CMP_EQ_OQ);
  *best = m;
  return _mm512_mask_reduce_min_epi32(eq, bi);
#elif FD_TIER == FD_TIER_AVX2
  __m256 bv = _mm256_loadu_ps(v);
  __m256i bi = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i idx = bi;
  const __m256i step = _mm256_set1_epi32(8);
  for (int64_t j = 8; j < n; j += 8) {
    idx = _mm256_add_epi32(idx, step);
    const __m256 x = _mm256_loadu_ps(v + j);
    const __m256 lt = _mm256_cmp_ps(x, bv, _CMP_LT_OQ);
    bv = _mm256_blendv_ps(bv, x, lt);
    bi = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(bi), _mm256_castsi256_ps(idx), lt));
  }
  alignas(32) float vals[8];
  alignas(32) int32_t ids[8];
  _mm256_store_ps(vals, bv);
  _mm256_store_si256(reinterpret_cast<__m256i*>(ids), bi);
  int64_t at = ids[0];
  float m = vals[0];
  for (int l = 1; l < 8; ++l)
    if (vals[l] < m || (vals[l] == m && ids[l] < at)) m = vals[l], at = ids[l];
  *best = m;
  return at;
#else
  int64_t at = 0;
  float m = v[0];
  for (int64_t j = 1; j < n; ++j)
    if (v[j] < m) m = v[j], at = j;
  *best = m;
  return at;
#endif
}

template <int R>
static inline int64_t assign_tile(const float* x, const Packed& c, int64_t* labels, float* dist2, float* tile) {
  const int64_t d = c.d;
  float best[R];
  int64_t at[R];
  for (int r = 0; r < R; ++r) best[r] = __builtin_inff(), at[r] = 0;
  for (int64_t k0 = 0; k0 < c.kpad; k0 += kCentroidBlock) {
    const int64_t kb = c.kpad - k0 < kCentroidBlock ? c.kpad - k0 : kCentroidBlock;
    for (int64_t p = k0 / NR; p < (k0 + kb) / NR; ++p)
      panel_dists<R>(x, d, c.pack + p * d * NR, c.cnorm + p * NR, tile + (p * NR - k0), kb);
    for (int r = 0; r < R; ++r) {
      float b;
      const int64_t a = argmin(tile + r * kb, kb, &b);
      if (b < best[r]) best[r] = b, at[r] = k0 + a;  // strict: ties keep the earlier centroid
    }
  }
  int64_t bad = 0;
  for (int r = 0; r < R; ++r) {
    const float* xr = x + r * d;
    float xx = 0.0f;
    for (int64_t q = 0; q < d; ++q) xx += xr[q] * xr[q];
    labels[r] = at[r];
    const float d2 = xx + best[r];
    dist2[r] = d2 > 0.0f ? d2 : 0.0f;
    bad += !finite(xx);
  }
  return bad;
}

template <int R>
static int64_t assign_tail(const float* x, int64_t rows, const Packed& c, int64_t* labels, float* dist2,
                           float* tile) {
  if constexpr (R == 0) {
    return 0;
  } else {
    if (rows == R) return assign_tile<R>(x, c, labels, dist2, tile);
    return assign_tail<R - 1>(x, rows, c, labels, dist2, tile);
  }
}

int64_t assign_rows(const float* x, int64_t rows, const Packed& c, int64_t* labels, float* dist2, float* tile) {
  int64_t bad = 0, i = 0;
  for (; i + MR <= rows; i += MR) bad += assign_tile<MR>(x + i * c.d, c, labels + i, dist2 + i, tile);
  if (i < rows) bad += assign_tail<MR - 1>(x + i * c.d, rows - i, c, labels + i, dist2 + i, tile);
  return bad;
}

int64_t accumulate_rows(const float* x, int64_t rows, int64_t d, const int64_t* labels, int64_t k, double* sums,
                        int64_t* counts) {
  int64_t bad = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t l = labels[i];
    if (l < 0 || l >= k) {
      ++bad;
      continue;
    }
    double* acc = sums + l * d;
    const float* xr = x + i * d;
    for (int64_t q = 0; q < d; ++q) acc[q] += static_cast<double>(xr[q]);
    ++counts[l];
  }
  return bad;
}

// ---------------------------------------------------------------------------------------------- column statistics

int64_t column_stats_rows(const float* x, int64_t rows, int64_t d, const float* prev, float* st, double* sabs) {
  // (restrict: the running vectors never alias x, so the column loops vectorize)
  float* __restrict__ mn = st;
  float* __restrict__ mx = st + d;
  float* __restrict__ amax = st + 2 * d;
  float* __restrict__ nz = st + 3 * d;
  float* __restrict__ step = st + 4 * d;
  double* __restrict__ sum = sabs;
  int32_t bad = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const float* __restrict__ xr = x + i * d;
    const float* __restrict__ before = i ? xr - d : prev;
    // (float and double work in separate loops: GCC does not vectorize one loop that mixes the widths)
    for (int64_t j = 0; j < d; ++j) {
      const float v = xr[j], a = std::fabs(v);
      bad += a <= FLT_MAX ? 0 : 1;
      mn[j] = v < mn[j] ? v : mn[j];
      mx[j] = v > mx[j] ? v : mx[j];
      amax[j] = a > amax[j] ? a : amax[j];
      nz[j] = ((a > 0.0f) & (a < nz[j])) ? a : nz[j];
    }
    for (int64_t j = 0; j < d; ++j) sum[j] += static_cast<double>(std::fabs(xr[j]));
    if (before)
      for (int64_t j = 0; j < d; ++j) {
        const float s = std::fabs(xr[j] - before[j]);
        step[j] = s > step[j] ? s : step[j];
      }
  }
  return bad;
}

// ---------------------------------------------------------------------------------------------- bin codes

// SIMD levels search one vector of rows at a time: the values and each step's edges arrive by gathers (the row
// block and a feature's 255 edges sit in L1/L2), and the 8 steps of the binary search run lane-parallel.
int64_t bin_rows(const float* x, int64_t rows, int64_t d, int64_t j0, int64_t j1, const float* edges255,
                 uint8_t* codes, int64_t n_total, int64_t row0) {
  int64_t bad = 0;
  for (int64_t j = j0; j < j1; ++j) {
    const float* e = edges255 + j * 255;
    uint8_t* out = codes + j * n_total + row0;
    int64_t i = 0;
#if FD_TIER == FD_TIER_AVX512
    if (d <= (int64_t(1) << 26)) {  // 32-bit gather offsets: 16 rows * d stays far below 2^31
      const __m512i rowoff = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                _mm512_set1_epi32(static_cast<int32_t>(d)));
      for (; i + 16 <= rows; i += 16) {
        const __m512 v = _mm512_i32gather_ps(rowoff, x + i * d + j, 4);
        bad += __builtin_popcount(_mm512_fpclass_ps_mask(v, 0x99));  // NaN or +-inf
        __m512i pos = _mm512_setzero_si512();
        for (int step = 128; step >= 1; step >>= 1) {
          const __m512i at = _mm512_add_epi32(pos, _mm512_set1_epi32(step - 1));
          const __mmask16 le = _mm512_cmp_ps_mask(_mm512_i32gather_ps(at, e, 4), v, _CMP_LE_OQ);
          pos = _mm512_mask_add_epi32(pos, le, pos, _mm512_set1_epi32(step));
        }
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm512_cvtepi32_epi8(pos));
      }
    }
#elif FD_TIER == FD_TIER_AVX2
    if (d <= (int64_t(1) << 27)) {
      const __m256i rowoff = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                _mm256_set1_epi32(static_cast<int32_t>(d)));
      const __m256 fmax = _mm256_set1_ps(FLT_MAX), sign = _mm256_set1_ps(-0.0f);
      for (; i + 8 <= rows; i += 8) {
        const __m256 v = _mm256_i32gather_ps(x + i * d + j, rowoff, 4);
        bad += __builtin_popcount(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, v), fmax, _CMP_NLE_UQ)));
        __m256i pos = _mm256_setzero_si256();
        for (int step = 128; step >= 1; step >>= 1) {
          const __m256i at = _mm256_add_epi32(pos, _mm256_set1_epi32(step - 1));
          const __m256 le = _mm256_cmp_ps(_mm256_i32gather_ps(e, at, 4), v, _CMP_LE_OQ);
          pos = _mm256_add_epi32(pos, _mm256_and_si256(_mm256_castps_si256(le), _mm256_set1_epi32(step)));
        }
        const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(pos), _mm256_extracti128_si256(pos, 1));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i), _mm_packus_epi16(w, w));
      }
    }
#endif
    for (; i < rows; ++i) {
      const float v = x[i * d + j];
      bad += !finite(v);
      int64_t pos = 0;  // number of edges <= v: the edges are sorted and padded with +inf to 255
      pos += e[pos + 127] <= v ? 128 : 0;
      pos += e[pos + 63] <= v ? 64 : 0;
      pos += e[pos + 31] <= v ? 32 : 0;
      pos += e[pos + 15] <= v ? 16 : 0;
      pos += e[pos + 7] <= v ? 8 : 0;
      pos += e[pos + 3] <= v ? 4 : 0;
      pos += e[pos + 1] <= v ? 2 : 0;
      pos += e[pos] <= v ? 1 : 0;
      out[i] = static_cast<uint8_t>(pos);
    }
  }
  return bad;
}

// ---------------------------------------------------------------------------------------------- linear codes

int64_t quantize_rows(const float* x, int64_t rows, int64_t d, const float* scale, const float* offset, float qmin,
                      float qmax, uint8_t* codes) {
  int64_t bad = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const float* xr = x + i * d;
    uint8_t* o = codes + i * d;
    int32_t rb = 0;
    for (int64_t j = 0; j < d; ++j) {
      rb += !finite(xr[j]);
      float v = (xr[j] - offset[j]) / scale[j];
      v = v < qmin ? qmin : v;
      v = v > qmax ? qmax : v;
      v = (v + kRound) - kRound;
      o[j] = static_cast<uint8_t>(static_cast<int32_t>(v));
    }
    bad += rb;
  }
  return bad;
}

void dequantize_rows(const uint8_t* codes, bool is_signed, int64_t rows, int64_t d, const float* scale,
                     const float* offset, float* out) {
  if (is_signed) {
    const auto* c = reinterpret_cast<const int8_t*>(codes);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < d; ++j) out[i * d + j] = static_cast<float>(c[i * d + j]) * scale[j] + offset[j];
  } else {
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < d; ++j) out[i * d + j] = static_cast<float>(codes[i * d + j]) * scale[j] + offset[j];
  }
}

// ---------------------------------------------------------------------------------------------- delta codes

int64_t delta_encode_block(const float* x, int64_t rows, int64_t width, int64_t ld, const float* anchor_scale,
                           const float* step_scale, float qmax, int8_t* codes, float* running) {
  int32_t bad = 0;
  for (int64_t j = 0; j < width; ++j) {
    bad += !finite(x[j]);
    float v = x[j] / anchor_scale[j];
    v = v < -qmax ? -qmax : v;
    v = v > qmax ? qmax : v;
    v = (v + kRound) - kRound;
    codes[j] = static_cast<int8_t>(v);
    running[j] = v * anchor_scale[j];
  }
  for (int64_t i = 1; i < rows; ++i) {
    const float* xr = x + i * ld;
    int8_t* o = codes + i * ld;
    for (int64_t j = 0; j < width; ++j) {
      bad += !finite(xr[j]);
      float v = (xr[j] - running[j]) / step_scale[j];
      v = v < -qmax ? -qmax : v;
      v = v > qmax ? qmax : v;
      v = (v + kRound) - kRound;
      o[j] = static_cast<int8_t>(v);
      running[j] = running[j] + v * step_scale[j];
    }
  }
  return bad;
}

void delta_decode_block(const int8_t* codes, int64_t rows, int64_t width, int64_t ld, const float* anchor_scale,
                        const float* step_scale, float* out) {
  for (int64_t j = 0; j < width; ++j) out[j] = static_cast<float>(codes[j]) * anchor_scale[j];
  for (int64_t i = 1; i < rows; ++i) {
    const int8_t* c = codes + i * ld;
    const float* prev = out + (i - 1) * ld;
    float* o = out + i * ld;
    for (int64_t j = 0; j < width; ++j) o[j] = prev[j] + static_cast<float>(c[j]) * step_scale[j];
  }
}

}  // namespace FD_TIER_NS
}  // namespace data

template <>
const DataLeaves& tier_leaves<DataLeaves, FD_TIER_SIMD>() {
  namespace k = data::FD_TIER_NS;
  static constexpr DataLeaves t{k::NR, k::MR, k::assign_rows, k::accumulate_rows, k::column_stats_rows, k::bin_rows,
                                k::quantize_rows, k::dequantize_rows, k::delta_encode_block, k::delta_decode_block};
  return t;
}
}  // namespace fd

#pragma GCC pop_options
