// int8 x int8 -> int32 GEMM on a prepacked weight (int8_isa.h describes the layout) and the dynamic-quantization
// linear layer built on it: per-row activation quantization, GEMM, and the dequantization epilogue fused into the
// GEMM's store. Also the two halves of the linear layer on their own (quantize rows; epilogue over an int32
// product), for when the GEMM itself runs elsewhere (torch._int_mm).
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/int8_isa.h"

namespace fd {
namespace {

// Rows of A one task multiplies with one panel: a multiple of every microkernel's row count (32, 6, 2, 1), small
// enough that the block (kRowBlock x K bytes) stays in L2 while the panels stream past it.
constexpr int64_t kRowBlock = 96;
static_assert(kRowBlock % 32 == 0, "row blocks hold whole AMX tiles");

// Below this many elements A's conversion or quantization runs on the calling thread (well under the GEMM's time):
// each extra parallel region is one more fork/join, and on a busy machine a join waits out a descheduled thread.
// Measured on the shared 2-core box, median int8_linear at M <= 16: 15 ms with two regions, 7 ms (the peer's) with one.
constexpr int64_t kParallelRowsMinElems = 1 << 18;

int row_threads(int64_t m, int64_t k, int nthreads) { return m * k >= kParallelRowsMinElems ? nthreads : 1; }

// Rows of the u8 copy of A: whole 32-row tiles (zero rows past m) for AMX, which loads them; just m otherwise.
int64_t a_rows(const Int8Leaves& leaf, int64_t m) {
#if FD_X86
  if (&leaf == &amx::leaves()) return padded_rows(m);
#endif
  return m;
}

std::atomic<bool> g_amx{true};

void run_gemm(const Int8Leaves& leaf, const uint8_t* ua, int64_t lda, int64_t m, const int8_t* packed,
              int64_t kgroups, int64_t n, const Int8Epilogue& e, int nthreads) {
  const int64_t panels = n_panels(n);
  const int64_t tasks = (m + kRowBlock - 1) / kRowBlock * panels;
  // A few rows (M = 1 decoding): the same contiguous half of the weight on the same thread every call, so a weight
  // that fits the cores' L2 caches together stays there (dynamic scattered the panels over both cores' L2). M=1,
  // 2 threads, raw call in a loop: 4096x1024 53 -> 39 us, 1024x1024 6.8 -> 5.7 us (L3-cold 4096x1024: 73 us either way).
  if (m < kAmxMinRows) {
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t p = 0; p < panels; ++p)
      leaf.gemm_panel(ua, lda, m, packed + p * kgroups * kGroupBytes, kgroups, 0, p * kPanel,
                      std::min(kPanel, n - p * kPanel), e);
    return;
  }
  // Dynamic: a thread that starts late (woken late on a busy machine) takes fewer panels instead of stalling all.
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t r0 = t / panels * kRowBlock, p = t % panels;
    leaf.gemm_panel(ua + r0 * lda, lda, std::min(kRowBlock, m - r0), packed + p * kgroups * kGroupBytes, kgroups,
                    r0, p * kPanel, std::min(kPanel, n - p * kPanel), e);
  }
}

}  // namespace

void int8_pack(const int8_t* src, int64_t k, int64_t n, int64_t sk, int64_t sn, int8_t* dst, int32_t* cp,
               int nthreads) {
  if (k < 0 || n < 0 || sk < 0 || sn < 0) throw std::invalid_argument("b: expected non-negative sizes and strides");
  const int64_t kg = k_groups(k);
  const int64_t panels = n_panels(n);
#pragma omp parallel for num_threads(clamp_threads(nthreads)) schedule(static)
  for (int64_t p = 0; p < panels; ++p) {
    int8_t* pp = dst + p * kg * kGroupBytes;
    const int64_t c0 = p * kPanel, nc = std::min(kPanel, n - c0);
    uint32_t sum[kPanel] = {};  // column sums modulo 2^32: all the compensation needs
    // Row by row: reads a contiguous K x N matrix along its rows (sn = 1). Whole groups of 4 rows of a row-major
    // matrix interleave in one branch-free loop.
    for (int64_t g = 0; g < kg; ++g) {
      if (sn == 1 && 4 * g + 3 < k && nc == kPanel) {
        const int8_t* r0 = src + 4 * g * sk + c0;
        const int8_t *r1 = r0 + sk, *r2 = r1 + sk, *r3 = r2 + sk;
        int8_t* q = pp + g * kGroupBytes;
        for (int64_t j = 0; j < kPanel; ++j) {
          q[4 * j] = r0[j];
          q[4 * j + 1] = r1[j];
          q[4 * j + 2] = r2[j];
          q[4 * j + 3] = r3[j];
          sum[j] += static_cast<uint32_t>(r0[j] + r1[j] + r2[j] + r3[j]);
        }
        continue;
      }
      for (int64_t t = 0; t < 4; ++t) {
        const int64_t row = 4 * g + t;
        int8_t* q = pp + g * kGroupBytes + t;
        for (int64_t j = 0; j < kPanel; ++j) {
          const int8_t v = (row < k && j < nc) ? src[row * sk + (c0 + j) * sn] : 0;
          q[4 * j] = v;
          sum[j] += static_cast<uint32_t>(v);
        }
      }
    }
    for (int64_t j = 0; j < kPanel; ++j) cp[c0 + j] = static_cast<int32_t>(sum[j] * 128u);
  }
}

void int8_gemm(const int8_t* a, int64_t m, int64_t k, const int8_t* pk, const int32_t* comp, int64_t n,
               int32_t* out, int nthreads) {
  if (m < 0 || k < 0 || n < 0) throw std::invalid_argument("int8_gemm: expected non-negative sizes");
  const int64_t kg = k_groups(k);
  const auto* src = reinterpret_cast<const uint8_t*>(a);
  const Int8Epilogue e{comp, out, nullptr, n, nullptr, nullptr, nullptr};
  const Int8Leaves& leaf = int8_leaves(m);
  nthreads = clamp_threads(nthreads);
  if (m == 0 || n == 0) return;
  const int64_t lda = 4 * kg;
  std::vector<uint8_t> ua(static_cast<size_t>(a_rows(leaf, m) * lda));
#pragma omp parallel for num_threads(row_threads(m, k, nthreads)) schedule(static)
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t i = 0; i < k; ++i) ua[r * lda + i] = src[r * k + i] ^ 0x80;  // a + 128 as an unsigned byte
    std::memset(ua.data() + r * lda + k, 0, static_cast<size_t>(lda - k));
  }
  run_gemm(leaf, ua.data(), lda, m, pk, kg, n, e, nthreads);
}

void int8_linear(const void* xp, DType dt, int64_t m, int64_t k, const int8_t* pk, const int32_t* comp,
                 const float* wscale, int64_t n, const float* bp, float* out, int nthreads) {
  if (dt == DType::F16) throw std::invalid_argument("x: expected float32 or bfloat16, got float16");
  if (m < 0 || k < 0 || n < 0) throw std::invalid_argument("int8_linear: expected non-negative sizes");
  const int64_t kg = k_groups(k);
  const Int8Leaves& leaf = int8_leaves(m);
  nthreads = clamp_threads(nthreads);
  if (m == 0 || n == 0) return;
  const int64_t lda = 4 * kg, esz = dt == DType::F32 ? 4 : 2;
  std::vector<uint8_t> ua(static_cast<size_t>(a_rows(leaf, m) * lda));
  std::vector<float> rs(static_cast<size_t>(m));
#pragma omp parallel for num_threads(row_threads(m, k, nthreads)) schedule(static)
  for (int64_t r = 0; r < m; ++r)
    leaf.quantize_rows(static_cast<const char*>(xp) + r * k * esz, dt, 1, k, ua.data() + r * lda, lda, nullptr,
                       rs.data() + r);
  const Int8Epilogue e{comp, nullptr, out, n, rs.data(), wscale, bp};
  run_gemm(leaf, ua.data(), lda, m, pk, kg, n, e, nthreads);
}

void int8_quantize_rows(const void* xp, DType dt, int64_t m, int64_t k, int8_t* qp, float* sp, int nthreads) {
  if (dt == DType::F16) throw std::invalid_argument("x: expected float32 or bfloat16, got float16");
  const Int8Leaves& leaf = int8_leaves(0);  // quantize_rows only: the same leaf at every row count
  const int64_t esz = dt == DType::F32 ? 4 : 2;
#pragma omp parallel for num_threads(row_threads(m, k, clamp_threads(nthreads))) schedule(static)
  for (int64_t r = 0; r < m; ++r)
    leaf.quantize_rows(static_cast<const char*>(xp) + r * k * esz, dt, 1, k, nullptr, 0, qp + r * k, sp + r);
}

void int8_dequantize(const int32_t* cp, int64_t m, int64_t n, const float* rs, const float* cs, const float* bp,
                     float* op, int nthreads) {
#pragma omp parallel for num_threads(clamp_threads(nthreads)) schedule(static)
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < n; ++j) {
      const float v = static_cast<float>(cp[r * n + j]) * rs[r] * cs[j];
      op[r * n + j] = bp ? v + bp[j] : v;
    }
}

void int8_set_amx(bool enabled) { g_amx.store(enabled, std::memory_order_relaxed); }

bool int8_amx_in_use(int64_t m) {
#if FD_X86
  return &int8_leaves(m) == &amx::leaves();
#else
  (void)m;
  return false;
#endif
}

const Int8Leaves& int8_leaves(int64_t m) {
#if FD_X86
  if (simd_level() == Simd::Avx512) {
    if (m >= kAmxMinRows && g_amx.load(std::memory_order_relaxed) && amx::available()) return amx::leaves();
    static const bool vnni = __builtin_cpu_supports("avx512vnni");
    if (!vnni) return leaves<Int8Leaves>(Simd::Avx2);
  }
#endif
  return leaves<Int8Leaves>();
}
}  // namespace fd
