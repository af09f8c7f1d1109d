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

// Rows of A one task multiplies with one panel: a multiple of every microkernel's row count (AMX 32, VNNI and int16
// widening 6, sign trick 4, scalar 1), small enough that the block (kRowBlock prepared rows of K to 2K bytes) stays
// in L2 while the panels stream past it. A cache-size choice, not a measured one: any x86 or ARM core of the last
// decade has the 256 KiB of L2 that a K = 1024 block and a panel take.
constexpr int64_t kRowBlock = 96;
static_assert(kRowBlock % 32 == 0, "row blocks hold whole AMX tiles");

// Below this many elements A's conversion or quantization runs on the calling thread (well under the GEMM's time):
// each extra parallel region is one more fork/join, and on a busy machine a join waits out a descheduled thread.
// Measured on the shared 2-core box, median int8_linear at M <= 16: 15 ms with two regions, 7 ms (the peer's) with one.
constexpr int64_t kParallelRowsMinElems = 1 << 18;

std::atomic<bool> g_amx{true};

// The GEMM for m rows of A times a B that holds -128 or not: at the avx512 tier AMX tiles where available (for
// m >= kAmxMinRows), else the tier's kernels.
const Int8Gemm& select_gemm([[maybe_unused]] int64_t m, bool b_has_min) {
#if FD_X86
  if (simd_level() == Simd::Avx512 && m >= kAmxMinRows && g_amx.load(std::memory_order_relaxed) && amx::available())
    return amx::gemm();
#endif
  const Int8Leaves& leaf = int8_leaves();
  return b_has_min ? leaf.exact : leaf.fast;
}

void run_gemm(const Int8Gemm& gemm, const void* a, int64_t lda, int64_t m, const int8_t* packed, int64_t kgroups,
              int64_t n, const Int8Epilogue& e, int nthreads) {
  const int64_t a_row_bytes = lda * gemm.a_elem;
  const int64_t panels = n_panels(n);
  const int64_t tasks = (m + kRowBlock - 1) / kRowBlock * panels;
  // A few rows (M = 1 decoding): the same contiguous half of the weight on the same thread every call, so a weight
  // that fits the cores' L2 caches together stays there (dynamic scattered the panels over both cores' L2). M=1,
  // 2 threads, raw call in a loop: 4096x1024 53 -> 39 us, 1024x1024 6.8 -> 5.7 us (L3-cold 4096x1024: 73 us either way).
  if (m < kAmxMinRows) {
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t p = 0; p < panels; ++p)
      gemm.gemm_panel(a, lda, m, packed + p * kgroups * kGroupBytes, kgroups, 0, p * kPanel,
                      std::min(kPanel, n - p * kPanel), e);
    return;
  }
  // Dynamic: a thread that starts late (woken late on a busy machine) takes fewer panels instead of stalling all.
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t r0 = t / panels * kRowBlock, p = t % panels;
    gemm.gemm_panel(static_cast<const char*>(a) + r0 * a_row_bytes, lda, std::min(kRowBlock, m - r0),
                    packed + p * kgroups * kGroupBytes, kgroups, r0, p * kPanel, std::min(kPanel, n - p * kPanel), e);
  }
}

}  // namespace

int row_threads(int64_t m, int64_t k, int nthreads) { return m * k >= kParallelRowsMinElems ? nthreads : 1; }

// The tier's leaves; an AVX-512 CPU without VNNI runs the avx2 tier's (the avx512 int8 unit is built for VNNI).
const Int8Leaves& int8_leaves() {
#if FD_X86
  static const bool vnni = __builtin_cpu_supports("avx512vnni");
  if (simd_level() == Simd::Avx512 && !vnni) return leaves<Int8Leaves>(Simd::Avx2);
#endif
  return leaves<Int8Leaves>();
}

PreparedA::PreparedA(const Int8Gemm& gemm, int64_t m, int64_t kgroups) : lda(4 * kgroups) {
#if FD_X86
  if (&gemm == &amx::gemm()) m = padded_rows(m);
#endif
  bytes.resize(static_cast<size_t>(m * lda * gemm.a_elem));
}

void prepare_activations(const Int8Gemm& gemm, const void* xp, DType dt, int64_t m, int64_t k, PreparedA& ua,
                         float* rs, int nthreads) {
  const auto quantize_row = int8_leaves().quantize_row;
  const int64_t esz = dtype_size(dt);
#pragma omp parallel num_threads(row_threads(m, k, nthreads))
  {
    // codes go straight into their prepared row where the form starts with them, else through a row of codes
    std::vector<int8_t> codes(gemm.in_place ? 0 : static_cast<size_t>(k));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < m; ++r) {
      int8_t* q = gemm.in_place ? static_cast<int8_t*>(ua.row(gemm, r)) : codes.data();
      quantize_row(static_cast<const char*>(xp) + r * k * esz, dt, k, q, rs + r);
      gemm.prepare_row(q, k, ua.row(gemm, r), ua.lda);
    }
  }
}

void int8_pack(const int8_t* src, int64_t k, int64_t n, int64_t sk, int64_t sn, int8_t* dst, int32_t* cp,
               int nthreads) {
  if (k < 0 || n < 0 || sk < 0 || sn < 0) throw std::invalid_argument("b: expected non-negative sizes and strides");
  const int64_t kg = k_groups(k);
  const int64_t panels = n_panels(n);
  int has_min = 0;
#pragma omp parallel for num_threads(clamp_threads(nthreads)) schedule(static) reduction(| : has_min)
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
    uint8_t lowest = 0;  // any byte 0x80 (-128) among the panel's
    for (int64_t i = 0; i < kg * kGroupBytes; ++i) lowest |= static_cast<uint8_t>(pp[i]) == 0x80;
    has_min |= lowest;
  }
  std::fill(cp + panels * kPanel, cp + panels * kPanel + kCompTrailer, 0);
  cp[panels * kPanel] = has_min;
}

void int8_gemm(const int8_t* a, int64_t m, int64_t k, const int8_t* pk, const int32_t* comp, int64_t n,
               int32_t* out, int nthreads) {
  if (m < 0 || k < 0 || n < 0) throw std::invalid_argument("int8_gemm: expected non-negative sizes");
  const int64_t kg = k_groups(k);
  if (m == 0 || n == 0) return;
  const Int8Gemm& gemm = select_gemm(m, int8_packed_has_min(comp, n));
  const Int8Epilogue e{gemm.shifted ? comp : nullptr, out, nullptr, n, nullptr, nullptr, nullptr};
  nthreads = clamp_threads(nthreads);
  PreparedA ua(gemm, m, kg);
#pragma omp parallel for num_threads(row_threads(m, k, nthreads)) schedule(static)
  for (int64_t r = 0; r < m; ++r) gemm.prepare_row(a + r * k, k, ua.row(gemm, r), ua.lda);
  run_gemm(gemm, ua.bytes.data(), ua.lda, m, pk, kg, n, e, nthreads);
}

void int8_linear(const void* xp, DType dt, int64_t m, int64_t k, const int8_t* pk, const int32_t* comp,
                 const float* wscale, int64_t n, const float* bp, float* out, int nthreads) {
  if (dt == DType::F16) throw std::invalid_argument("x: expected float32 or bfloat16, got float16");
  if (m < 0 || k < 0 || n < 0) throw std::invalid_argument("int8_linear: expected non-negative sizes");
  const int64_t kg = k_groups(k);
  if (m == 0 || n == 0) return;
  const Int8Gemm& gemm = select_gemm(m, int8_packed_has_min(comp, n));
  nthreads = clamp_threads(nthreads);
  PreparedA ua(gemm, m, kg);
  std::vector<float> rs(static_cast<size_t>(m));
  prepare_activations(gemm, xp, dt, m, k, ua, rs.data(), nthreads);
  const Int8Epilogue e{gemm.shifted ? comp : nullptr, nullptr, out, n, rs.data(), wscale, bp};
  run_gemm(gemm, ua.bytes.data(), ua.lda, m, pk, kg, n, e, nthreads);
}

void int8_quantize_rows(const void* xp, DType dt, int64_t m, int64_t k, int8_t* qp, float* sp, int nthreads) {
  if (dt == DType::F16) throw std::invalid_argument("x: expected float32 or bfloat16, got float16");
  const auto quantize_row = int8_leaves().quantize_row;
  const int64_t esz = dtype_size(dt);
#pragma omp parallel for num_threads(row_threads(m, k, clamp_threads(nthreads))) schedule(static)
  for (int64_t r = 0; r < m; ++r) quantize_row(static_cast<const char*>(xp) + r * k * esz, dt, k, qp + r * k, sp + r);
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

const char* int8_kernel_name(int64_t m, bool b_has_min) { return select_gemm(m, b_has_min).name; }

bool int8_amx_in_use(int64_t m) {
#if FD_X86
  return &select_gemm(m, false) == &amx::gemm();
#else
  (void)m;
  return false;
#endif
}
}  // namespace fd
