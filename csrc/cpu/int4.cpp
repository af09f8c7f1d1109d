// int4 weight-only linear layer (layout in int4.h, leaves in int4_kernels.h): packing, and the drivers of both
// routes. W4A8 runs on the int8 GEMM's leaves (int8_isa.h): its per-row activation quantization, and its panel
// kernel on each scale group's codes unpacked into its layout.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/int4_isa.h"
#include "cpu/int8_isa.h"

namespace fd {
namespace {

// Rows one task multiplies with one panel: a multiple of every leaf's row count (6, 4, 2, 1).
constexpr int64_t kRowBlock = 96;

void check_sizes(int64_t k, int64_t n, int64_t g) {
  if (k < 0 || n < 0) throw std::invalid_argument("int4: expected non-negative sizes");
  if (g < 4 || g % 4) throw std::invalid_argument("group_size: expected a multiple of 4, got " + std::to_string(g));
  if (k % g) throw std::invalid_argument("group_size: " + std::to_string(g) + " does not divide K = " +
                                         std::to_string(k));
}

const Int4Leaves& int4_leaves() {
#if FD_X86
  if (simd_level() == Simd::Avx512) {
    static const bool vnni = __builtin_cpu_supports("avx512vnni");
    if (!vnni) return leaves<Int4Leaves>(Simd::Avx2);
  }
#endif
  return leaves<Int4Leaves>();
}

template <typename Fn>
void run_panels(int64_t m, int64_t n, int nthreads, Fn fn) {
  const int64_t panels = int4_panels(n);
  if (m <= 8) {  // a few rows: each thread keeps the same contiguous share of the weight (see int8.cpp)
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t p = 0; p < panels; ++p) fn(int64_t{0}, m, p);
    return;
  }
  const int64_t tasks = (m + kRowBlock - 1) / kRowBlock * panels;
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t r0 = t / panels * kRowBlock;
    fn(r0, std::min(kRowBlock, m - r0), t % panels);
  }
}

}  // namespace

void int4_pack(const uint8_t* codes, const float* scale, int64_t n, int64_t k, int64_t g, uint8_t* packed,
               int nthreads) {
  check_sizes(k, n, g);
  const int64_t kg = k / 4, groups = k / g, panels = int4_panels(n);
  float* sp = reinterpret_cast<float*>(packed + int4_code_bytes(k, n));
  int32_t* cp = reinterpret_cast<int32_t*>(sp + panels * groups * kInt4Panel);
#pragma omp parallel for num_threads(clamp_threads(nthreads)) schedule(static)
  for (int64_t p = 0; p < panels; ++p) {
    uint8_t* pp = packed + p * kg * kInt4GroupBytes;
    std::memset(pp, 0, static_cast<size_t>(kg * kInt4GroupBytes));
    for (int64_t c = 0; c < kInt4Panel; ++c) {
      const int64_t col = p * kInt4Panel + c;
      if (col >= n) break;
      const uint8_t* src = codes + col * (k / 2);
      for (int64_t kk = 0; kk < k; ++kk) {
        const uint8_t f = kk % 2 ? src[kk / 2] >> 4 : src[kk / 2] & 0x0f;
        const int64_t v = 4 * (c % 16) + kk % 4;  // field within the chunk
        uint8_t& byte = pp[(kk / 4) * kInt4GroupBytes + 32 * (c / 16) + (v & 31)];
        byte |= static_cast<uint8_t>(v < 32 ? f : f << 4);
      }
    }
    for (int64_t gi = 0; gi < groups; ++gi)
      for (int64_t c = 0; c < kInt4Panel; ++c) {
        const int64_t col = p * kInt4Panel + c;
        sp[(p * groups + gi) * kInt4Panel + c] = col < n ? scale[col * groups + gi] : 0.0f;
        int32_t sum = 0;
        for (int64_t kk = gi * g; col < n && kk < (gi + 1) * g; ++kk)
          sum += (kk % 2 ? codes[col * (k / 2) + kk / 2] >> 4 : codes[col * (k / 2) + kk / 2] & 0x0f) - 8;
        cp[(p * groups + gi) * kInt4Panel + c] = 128 * sum;
      }
  }
}

void int4_linear(const void* xp, DType dt, int64_t m, int64_t k, const uint8_t* packed, int64_t g, int64_t n,
                 const float* bias, float* out, bool act_int8, int nthreads) {
  if (dt == DType::F16) throw std::invalid_argument("x: expected float32 or bfloat16, got float16");
  if (m < 0) throw std::invalid_argument("int4_linear: expected m >= 0");
  check_sizes(k, n, g);
  nthreads = clamp_threads(nthreads);
  if (m == 0 || n == 0) return;
  const int64_t groups = k / g, gk = g / 4, panels = int4_panels(n);
  const float* sp = reinterpret_cast<const float*>(packed + int4_code_bytes(k, n));
  const int32_t* cp = reinterpret_cast<const int32_t*>(sp + panels * groups * kInt4Panel);
  const Int4Leaves& leaf = int4_leaves();
  auto panel = [&](int64_t p) {
    return Int4Panel{packed + p * (k / 4) * kInt4GroupBytes, sp + p * groups * kInt4Panel,
                     cp + p * groups * kInt4Panel, groups, gk, p * kInt4Panel, std::min(kInt4Panel, n - p * kInt4Panel)};
  };
  if (act_int8) {
    // The tier's `fast` kernel (codes - 8 lie within [-8, 7]; never AMX, which would need padded row tiles)
    const Int8Gemm& gemm = int8_leaves().fast;
    PreparedA ua(gemm, m, k_groups(k));
    std::vector<float> rs(static_cast<size_t>(m));
    prepare_activations(gemm, xp, dt, m, k, ua, rs.data(), nthreads);
    const int64_t a_row = ua.lda * gemm.a_elem, a_group = g * a_k_bytes(gemm);  // bytes: a row, a scale group
    run_panels(m, n, nthreads, [&](int64_t r0, int64_t rows, int64_t p) {
      const Int4Panel pp = panel(p);
      // Rows enough to reuse it: the whole panel unpacked once (K * 64 bytes, in L2); else one group at a time.
      const bool whole = rows > 8;
      std::vector<int8_t> codes(static_cast<size_t>((whole ? k / 4 : gk) * kGroupBytes));
      std::vector<int32_t> tile(static_cast<size_t>(rows * kInt4Panel));
      std::vector<float> res(static_cast<size_t>(rows * kInt4Panel), 0.0f);
      if (whole) leaf.unpack_codes(pp.codes, k / 4, codes.data());
      for (int64_t gi = 0; gi < groups; ++gi) {
        const int8_t* gcodes = codes.data() + (whole ? gi * gk * kGroupBytes : 0);
        if (!whole) leaf.unpack_codes(pp.codes + gi * gk * kInt4GroupBytes, gk, codes.data());
        const Int8Epilogue e{gemm.shifted ? pp.comp + gi * kInt4Panel : nullptr, tile.data(), nullptr, kInt4Panel,
                             nullptr, nullptr, nullptr};
        gemm.gemm_panel(ua.bytes.data() + r0 * a_row + gi * a_group, ua.lda, rows, gcodes, gk, 0, 0, kInt4Panel, e);
        leaf.accumulate(tile.data(), rows, pp.scales + gi * kInt4Panel, res.data());
      }
      for (int64_t r = 0; r < rows; ++r) {
        float* orow = out + (r0 + r) * n + pp.col0;
        const float* b = bias ? bias + pp.col0 : nullptr;
        for (int64_t j = 0; j < pp.ncols; ++j) {
          const float v = res[r * kInt4Panel + j] * rs[r0 + r];
          orow[j] = b ? v + b[j] : v;
        }
      }
    });
    return;
  }
  const float* x = static_cast<const float*>(xp);
  std::vector<float> xf;
  if (dt == DType::BF16) {  // bf16 -> fp32 once: the leaves broadcast fp32 activations
    xf.resize(static_cast<size_t>(m * k));
    const auto* bits = static_cast<const uint16_t*>(xp);
#pragma omp parallel for num_threads(row_threads(m, k, nthreads)) schedule(static)
    for (int64_t i = 0; i < m * k; ++i) {
      const uint32_t w = static_cast<uint32_t>(bits[i]) << 16;
      std::memcpy(&xf[static_cast<size_t>(i)], &w, 4);
    }
    x = xf.data();
  }
  const Int4Out o{out, n, bias};
  run_panels(m, n, nthreads, [&](int64_t r0, int64_t rows, int64_t p) {
    leaf.a16_rows(x + r0 * k, k, rows, r0, panel(p), o);
  });
}

}  // namespace fd
