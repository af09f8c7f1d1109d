// Leaf kernels of CSR sparse matmul, written once over a tiny vector abstraction (VF: one register of `kLanes`
// floats). Compiled once per SIMD tier (sparse_scalar.cpp, x86/sparse_avx2.cpp, x86/sparse_avx512.cpp,
// arm/sparse_neon.cpp; see core.h),
// so one binary carries every tier.
//
// Two shapes of work, both row-parallel over output features (each thread owns whole rows: no atomics):
// * gather_rows (small batch): per output row, a dot product of the row's nonzeros with x gathered at their column
//   indices (x of one sample, 16 KiB for 4096 inputs, sits in L1; the weight streams once).
// * tile_rows (batch > kGatherMaxBatch, see sparse.cpp): x is packed as (cols, tile) so that each nonzero W[n, c]
//   does one AXPY of a contiguous tile row xp[c, :] into `nv` accumulator registers: nv loads + nv FMAs per
//   nonzero, the accumulators never leave registers, and the weight is read once per tile.
//
// int8 values are converted to fp32 in registers as they are loaded; the row's scale multiplies its finished sum
// once (scale[n] * sum_j code_j x_j), before the bias is added.
//
// Column indices are clamped to cols - 1 (one min per index or vector of indices) so a corrupt index can never
// read outside x; the leaves report whether any index was out of range and the caller raises.
//
// Expects, before inclusion: "sparse_isa.h", then the tier header (FD_TIER, FD_TIER_NS, FD_TIER_SIMD).

namespace fd {
namespace FD_TIER_NS {

#if FD_TIER == FD_TIER_AVX512
using VF = __m512;
constexpr int kLanes = 16;
static inline VF vzero() { return _mm512_setzero_ps(); }
static inline VF vset1(float a) { return _mm512_set1_ps(a); }
static inline VF vload(const float* p) { return _mm512_loadu_ps(p); }
static inline void vstore(float* p, VF v) { _mm512_storeu_ps(p, v); }
static inline VF vfma(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
#elif FD_TIER == FD_TIER_AVX2
using VF = __m256;
constexpr int kLanes = 8;
static inline VF vzero() { return _mm256_setzero_ps(); }
static inline VF vset1(float a) { return _mm256_set1_ps(a); }
static inline VF vload(const float* p) { return _mm256_loadu_ps(p); }
static inline void vstore(float* p, VF v) { _mm256_storeu_ps(p, v); }
static inline VF vfma(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
#elif FD_TIER >= FD_TIER_NEON
using VF = float32x4_t;
constexpr int kLanes = 4;
static inline VF vzero() { return vdupq_n_f32(0.0f); }
static inline VF vset1(float a) { return vdupq_n_f32(a); }
static inline VF vload(const float* p) { return vld1q_f32(p); }
static inline void vstore(float* p, VF v) { vst1q_f32(p, v); }
static inline VF vfma(VF a, VF b, VF c) { return vfmaq_f32(c, a, b); }
#else
using VF = float;
constexpr int kLanes = 1;
static inline VF vzero() { return 0.0f; }
static inline VF vset1(float a) { return a; }
static inline VF vload(const float* p) { return *p; }
static inline void vstore(float* p, VF v) { *p = v; }
static inline VF vfma(VF a, VF b, VF c) { return a * b + c; }
#endif

static inline float bf16_to_f32(uint16_t bits) {
  return __builtin_bit_cast(float, static_cast<uint32_t>(bits) << 16);
}

// Column index j as unsigned: 16-bit indices are stored unsigned, a negative int32 becomes huge (out of range).
template <bool I16>
static inline uint32_t col_at(const void* idx, int64_t j) {
  if constexpr (I16) return static_cast<const uint16_t*>(idx)[j];
  else return static_cast<uint32_t>(static_cast<const int32_t*>(idx)[j]);
}

template <Val V>
static inline float val_at(const void* vals, int64_t j) {
  if constexpr (V == Val::BF16) return bf16_to_f32(static_cast<const uint16_t*>(vals)[j]);
  else if constexpr (V == Val::I8) return static_cast<float>(static_cast<const int8_t*>(vals)[j]);
  else return static_cast<const float*>(vals)[j];
}


// sum_j vals[j] * x[cols[j]] over [b, e); *maxc collects the largest raw column index seen.
template <bool I16, Val V>
static inline float sparse_dot(const void* idx, const void* vals, int64_t b, int64_t e, const float* x,
                               uint32_t last, uint32_t* maxc) {
  int64_t j = b;
  float sum = 0.0f;
#if FD_TIER == FD_TIER_AVX512
  const __m512i lastv = _mm512_set1_epi32(static_cast<int>(last));
  __m512i maxv = _mm512_setzero_si512();
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  auto load_idx = [&](int64_t at, __mmask16 k) {
    __m512i c;
    if constexpr (I16) c = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, static_cast<const uint16_t*>(idx) + at));
    else c = _mm512_maskz_loadu_epi32(k, static_cast<const int32_t*>(idx) + at);
    maxv = _mm512_max_epu32(maxv, c);
    return _mm512_min_epu32(c, lastv);
  };
  auto load_val = [&](int64_t at, __mmask16 k) {
    if constexpr (V == Val::BF16)
      return _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, static_cast<const uint16_t*>(vals) + at)), 16));
    else if constexpr (V == Val::I8)
      return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(k, static_cast<const int8_t*>(vals) + at)));
    else return _mm512_maskz_loadu_ps(k, static_cast<const float*>(vals) + at);
  };
  for (; j + 32 <= e; j += 32) {  // two independent chains hide the gather latency
    const __m512i c0 = load_idx(j, 0xffff), c1 = load_idx(j + 16, 0xffff);
    acc0 = _mm512_fmadd_ps(load_val(j, 0xffff), _mm512_i32gather_ps(c0, x, 4), acc0);
    acc1 = _mm512_fmadd_ps(load_val(j + 16, 0xffff), _mm512_i32gather_ps(c1, x, 4), acc1);
  }
  if (j < e) {
    for (; j < e; j += 16) {
      const __mmask16 k = e - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (e - j)) - 1);
      const __m512i c = load_idx(j, k);
      acc0 = _mm512_fmadd_ps(load_val(j, k), _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, c, x, 4), acc0);
    }
  }
  *maxc = std::max(*maxc, static_cast<uint32_t>(_mm512_reduce_max_epu32(maxv)));
  sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#elif FD_TIER == FD_TIER_AVX2
  const __m256i lastv = _mm256_set1_epi32(static_cast<int>(last));
  __m256i maxv = _mm256_setzero_si256();
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  auto load8 = [&](int64_t at) {
    __m256i c;
    if constexpr (I16)
      c = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(idx) + at)));
    else c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const int32_t*>(idx) + at));
    maxv = _mm256_max_epu32(maxv, c);
    __m256 v;
    if constexpr (V == Val::BF16)
      v = _mm256_castsi256_ps(_mm256_slli_epi32(
          _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(vals) + at))), 16));
    else if constexpr (V == Val::I8)
      v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(vals) + at))));
    else v = _mm256_loadu_ps(static_cast<const float*>(vals) + at);
    return _mm256_mul_ps(v, _mm256_i32gather_ps(x, _mm256_min_epu32(c, lastv), 4));
  };
  for (; j + 16 <= e; j += 16) {
    acc0 = _mm256_add_ps(acc0, load8(j));
    acc1 = _mm256_add_ps(acc1, load8(j + 8));
  }
  for (; j + 8 <= e; j += 8) acc0 = _mm256_add_ps(acc0, load8(j));
  alignas(32) uint32_t mx[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(mx), maxv);
  for (uint32_t m : mx) *maxc = std::max(*maxc, m);
  alignas(32) float s[8];
  _mm256_store_ps(s, _mm256_add_ps(acc0, acc1));
  sum = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
#elif FD_TIER >= FD_TIER_NEON
  // No gather instruction: 4 indices clamped in a register, their x loaded one by one, multiplied as a vector.
  const uint32x4_t lastv = vdupq_n_u32(last);
  uint32x4_t maxv = vdupq_n_u32(0);
  float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = acc0;
  auto load4 = [&](int64_t at) {
    uint32x4_t c;
    if constexpr (I16) c = vmovl_u16(vld1_u16(static_cast<const uint16_t*>(idx) + at));
    else c = vreinterpretq_u32_s32(vld1q_s32(static_cast<const int32_t*>(idx) + at));
    maxv = vmaxq_u32(maxv, c);
    alignas(16) uint32_t ci[4];
    vst1q_u32(ci, vminq_u32(c, lastv));
    const float32x4_t xv = {x[ci[0]], x[ci[1]], x[ci[2]], x[ci[3]]};
    float32x4_t v;
    if constexpr (V == Val::BF16) {
      v = vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(static_cast<const uint16_t*>(vals) + at), 16));
    } else if constexpr (V == Val::I8) {
      int32_t w;  // exactly 4 codes (8-byte loads would read past the last row's values)
      std::memcpy(&w, static_cast<const int8_t*>(vals) + at, 4);
      v = vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(w))))));
    } else {
      v = vld1q_f32(static_cast<const float*>(vals) + at);
    }
    return vmulq_f32(v, xv);
  };
  for (; j + 8 <= e; j += 8) {
    acc0 = vaddq_f32(acc0, load4(j));
    acc1 = vaddq_f32(acc1, load4(j + 4));
  }
  for (; j + 4 <= e; j += 4) acc0 = vaddq_f32(acc0, load4(j));
  *maxc = std::max(*maxc, vmaxvq_u32(maxv));
  sum = vaddvq_f32(vaddq_f32(acc0, acc1));
#endif
  for (; j < e; ++j) {
    const uint32_t c = col_at<I16>(idx, j);
    *maxc = std::max(*maxc, c);
    sum += val_at<V>(vals, j) * x[std::min(c, last)];
  }
  return sum;
}

template <bool I16, Val V>
static bool gather_rows_t(const Csr& w, const float* x, int64_t M, const float* bias, OutView out, int64_t r0,
                          int64_t r1) {
  const uint32_t last = static_cast<uint32_t>(w.cols - 1);
  uint32_t maxc = 0;
  for (int64_t n = r0; n < r1; ++n) {
    const int64_t b = w.indptr[n], e = w.indptr[n + 1];
    // No software prefetch of the next rows: the weight streams sequentially and the hardware prefetcher keeps up;
    // prefetching 64 values ahead cost 7% (4096x4096 at 0.9 sparsity, M = 1, AVX-512: 0.49 vs 0.46 ms on one
    // thread, 0.25 vs 0.23 ms on two). The loop is bound by gather throughput (~3.6 G gathered floats/s a thread).
    for (int64_t m = 0; m < M; ++m) {
      float s = sparse_dot<I16, V>(w.indices, w.values, b, e, x + m * w.cols, last, &maxc);
      if constexpr (V == Val::I8) s *= w.scale[n];
      out.data[m * out.om + n * out.on] = bias ? s + bias[n] : s;
    }
  }
  return maxc > last;
}

// Sample-major outputs are written through a buffer of kRowGroup rows so that each sample's results go out as one
// contiguous run (a cache line) instead of one float per row: a column of a (256, 4096) output touches 256 pages,
// more than the DTLB holds.
constexpr int64_t kRowGroup = 16;
constexpr int64_t kValBlock = 256;  // nonzeros whose bf16 / int8 values tile_rows converts to fp32 at once

template <int NV, bool I16, Val V>
static bool tile_rows_t(const Csr& w, const float* xp, int64_t mcount, const float* bias, OutView out, int64_t r0,
                        int64_t r1) {
  constexpr int MT = NV * kLanes;
  // Independent accumulator sets so that at least ~8 FMA chains are in flight (an FMA waits 4 cycles on its
  // accumulator: with one set of NV = 1 register the loop ran at one nonzero per 4 cycles).
  constexpr int U = (8 + NV - 1) / NV;
  const uint32_t last = static_cast<uint32_t>(w.cols - 1);
  uint32_t maxc = 0;
  alignas(64) float buf[kRowGroup][MT];
  alignas(64) float vals[kValBlock];
  const bool direct = out.om == 1 && mcount == MT;  // output rows are contiguous tiles: store registers as they are
  for (int64_t g = r0; g < r1; g += kRowGroup) {
    const int64_t g1 = std::min(r1, g + kRowGroup);
    for (int64_t n = g; n < g1; ++n) {
      VF acc[U][NV];
      for (int u = 0; u < U; ++u)
        for (int v = 0; v < NV; ++v) acc[u][v] = vzero();
      // vals[t]: the value of nonzero j0 + t as fp32
      auto axpy = [&](int u, int64_t j, float val) {
        const uint32_t c = col_at<I16>(w.indices, j);
        maxc = std::max(maxc, c);
        const float* xr = xp + static_cast<int64_t>(std::min(c, last)) * MT;
        const VF wv = vset1(val);
        for (int v = 0; v < NV; ++v) acc[u][v] = vfma(wv, vload(xr + v * kLanes), acc[u][v]);
      };
      auto run = [&](int64_t j0, int64_t e0, const float* vals) {
        int64_t j = j0;
        for (; j + U <= e0; j += U)
          for (int u = 0; u < U; ++u) axpy(u, j + u, vals[j + u - j0]);
        for (; j < e0; ++j) axpy(0, j, vals[j - j0]);
      };
      const int64_t b = w.indptr[n], e = w.indptr[n + 1];
      if constexpr (V == Val::F32) {
        run(b, e, static_cast<const float*>(w.values) + b);
      } else {  // bf16 / int8 values converted a block at a time by one vectorized loop, not one by one per nonzero
        for (int64_t j0 = b; j0 < e; j0 += kValBlock) {
          const int64_t e0 = std::min(e, j0 + kValBlock);
          for (int64_t j = j0; j < e0; ++j) vals[j - j0] = val_at<V>(w.values, j);
          run(j0, e0, vals);
        }
      }
      const VF init = bias ? vset1(bias[n]) : vzero();
      float* dst = direct ? out.data + n * out.on : buf[n - g];
      for (int v = 0; v < NV; ++v) {
        VF sum = V == Val::I8 ? vzero() : init;
        for (int u = 0; u < U; ++u) sum = sum + acc[u][v];
        if constexpr (V == Val::I8) sum = vfma(sum, vset1(w.scale[n]), init);
        vstore(dst + v * kLanes, sum);
      }
    }
    if (!direct)
      for (int64_t m = 0; m < mcount; ++m)
        for (int64_t n = g; n < g1; ++n) out.data[m * out.om + n * out.on] = buf[n - g][m];
  }
  return maxc > last;
}

// Calls fn(std::bool_constant<idx16>, std::integral_constant<Val, vals>) for w's index and value types.
template <typename Fn>
static bool with_csr_types(const Csr& w, Fn&& fn) {
  auto by_val = [&](auto i16) {
    switch (w.vals) {
      case Val::BF16: return fn(i16, std::integral_constant<Val, Val::BF16>{});
      case Val::I8: return fn(i16, std::integral_constant<Val, Val::I8>{});
      default: return fn(i16, std::integral_constant<Val, Val::F32>{});
    }
  };
  return w.idx16 ? by_val(std::true_type{}) : by_val(std::false_type{});
}

static bool gather_rows(const Csr& w, const float* x, int64_t M, const float* bias, OutView out, int64_t r0,
                        int64_t r1) {
  return with_csr_types(w, [&](auto i16, auto v) {
    return gather_rows_t<decltype(i16)::value, decltype(v)::value>(w, x, M, bias, out, r0, r1);
  });
}

template <int NV>
static bool tile_rows_nv(const Csr& w, const float* xp, int64_t mcount, const float* bias, OutView out, int64_t r0,
                         int64_t r1) {
  return with_csr_types(w, [&](auto i16, auto v) {
    return tile_rows_t<NV, decltype(i16)::value, decltype(v)::value>(w, xp, mcount, bias, out, r0, r1);
  });
}

static bool tile_rows(const Csr& w, const float* xp, int nv, int64_t mcount, const float* bias, OutView out,
                      int64_t r0, int64_t r1) {
  switch (nv) {
    case 1: return tile_rows_nv<1>(w, xp, mcount, bias, out, r0, r1);
    case 2: return tile_rows_nv<2>(w, xp, mcount, bias, out, r0, r1);
    case 3: return tile_rows_nv<3>(w, xp, mcount, bias, out, r0, r1);
    default: return tile_rows_nv<kMaxVectors>(w, xp, mcount, bias, out, r0, r1);
  }
}

}  // namespace FD_TIER_NS

template <>
const SparseLeaves& tier_leaves<SparseLeaves, FD_TIER_SIMD>() {
  static constexpr SparseLeaves t{FD_TIER_NS::kLanes, FD_TIER_NS::gather_rows, FD_TIER_NS::tile_rows};
  return t;
}
}  // namespace fd
