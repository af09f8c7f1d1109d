// The arm tiers' kernels against the scalar tier, without Python: built for aarch64 with
// `aarch64-linux-gnu-g++ -static` by tools/arm_check.sh and run under qemu-aarch64 at CPU models with and without
// the dot product. Every family (int8 GEMM and its quantize / dequantize epilogue, magnitude selection and N:M
// masks, linear quantization, the fused KD losses, CSR matmul) runs at each arm tier this CPU supports and at the
// scalar tier on the same inputs, at awkward sizes (empty, 1, odd, SIMD and tile edges, large-ish). The scalar
// units are compiled without vectorization for this driver (tools/arm_check.sh), so the reference is plain code.
//
// Integer outputs (GEMM sums, codes, masks, selections) must be bit-identical; floats within the tolerances stated
// at each check. The int8 GEMM is also checked against a naive triple loop, and, given --x86-pack FILE, the driver
// multiplies with a weight packed by the x86 build (tests/test_arm.py writes it) to show the layout is shared.
// Exits 1 on any mismatch; prints which tiers ran.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core.h"
#include "cpu/int4.h"
#include "cpu/int8.h"
#include "cpu/kd.h"
#include "cpu/prune.h"
#include "cpu/prune_isa.h"
#include "cpu/quant.h"
#include "cpu/sparse.h"

using namespace fd;

namespace {

int g_checks = 0, g_fails = 0;

void expect(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok && ++g_fails <= 30) std::printf("FAIL %s\n", what.c_str());
}

struct Rng {  // xorshift64*: deterministic across architectures
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>(next() >> 40) * 0x1p-24f; }
};

uint16_t to_bf16(float f) { return static_cast<uint16_t>(__builtin_bit_cast(uint32_t, f) >> 16); }

// fp16 bits of f (|f| in [2^-14, 65504] or 0; truncating), enough to make test inputs.
uint16_t to_f16(float f) {
  const uint32_t u = __builtin_bit_cast(uint32_t, f);
  const uint32_t sign = (u >> 16) & 0x8000u, e = (u >> 23) & 0xffu;
  if (e < 113) return static_cast<uint16_t>(sign);
  return static_cast<uint16_t>(sign | ((e - 112) << 10) | ((u >> 13) & 0x3ffu));
}

bool same_float(float a, float b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

bool close(float a, float b, double atol, double rtol) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return std::fabs(static_cast<double>(a) - b) <= atol + rtol * std::fabs(static_cast<double>(b));
}

std::string sz(std::initializer_list<int64_t> v) {
  std::string s = "(";
  for (int64_t x : v) s += std::to_string(x) + ",";
  s.back() = ')';
  return s;
}

// Runs fn at tier t (restoring nothing: every check sets the tier it needs).
template <typename Fn>
void at(Simd t, Fn fn) {
  set_simd_level(simd_name(t));
  fn();
}

// ---- int8 GEMM, quantize / dequantize epilogue --------------------------------------------------------------------

std::vector<int32_t> naive_gemm(const std::vector<int8_t>& a, const std::vector<int8_t>& b, int64_t m, int64_t k,
                                int64_t n) {
  std::vector<int32_t> c(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      uint32_t s = 0;
      for (int64_t t = 0; t < k; ++t) s += static_cast<uint32_t>(int32_t(a[i * k + t]) * b[t * n + j]);
      c[i * n + j] = static_cast<int32_t>(s);
    }
  return c;
}

struct Packed {
  std::vector<int8_t> w;
  std::vector<int32_t> comp;
};

Packed pack(const std::vector<int8_t>& b, int64_t k, int64_t n, bool transposed) {
  Packed p{std::vector<int8_t>(static_cast<size_t>(int8_packed_bytes(k, n))),
           std::vector<int32_t>(static_cast<size_t>(int8_comp_size(n)))};
  if (!transposed) {
    int8_pack(b.data(), k, n, n, 1, p.w.data(), p.comp.data(), 2);
  } else {  // the same matrix stored column-major: the packer's strided path must give the same bytes
    std::vector<int8_t> bt(b.size());
    for (int64_t t = 0; t < k; ++t)
      for (int64_t j = 0; j < n; ++j) bt[j * k + t] = b[t * n + j];
    int8_pack(bt.data(), k, n, 1, k, p.w.data(), p.comp.data(), 2);
  }
  return p;
}

void test_int8(const std::vector<Simd>& tiers) {
  const int64_t sizes[][3] = {{0, 5, 3},   {3, 0, 5},     {4, 7, 0},     {1, 1, 1},      {1, 64, 64},
                              {2, 65, 63}, {3, 63, 65},   {4, 128, 64},  {5, 129, 130},  {6, 192, 17},
                              {7, 200, 129}, {8, 4, 16},  {13, 257, 200}, {33, 100, 70}, {97, 1000, 300}};
  Rng rng(1);
  for (const auto& s : sizes) {
    const int64_t m = s[0], k = s[1], n = s[2];
    for (int full_range = 0; full_range < 2; ++full_range) {  // B in [-127, 127] (the `fast` GEMM) or with -128
      std::vector<int8_t> a(static_cast<size_t>(m * k)), b(static_cast<size_t>(k * n));
      for (auto& v : a) v = static_cast<int8_t>(rng.below(256) - 128);
      for (auto& v : b) v = static_cast<int8_t>(full_range ? rng.below(256) - 128 : rng.below(255) - 127);
      if (full_range && !b.empty()) b[rng.below(static_cast<int64_t>(b.size()))] = -128;
      const Packed p = pack(b, k, n, false), pt = pack(b, k, n, true);
      expect(p.w == pt.w && p.comp == pt.comp, "int8_pack strided == contiguous " + sz({m, k, n}));
      const auto want = naive_gemm(a, b, m, k, n);
      for (Simd t : tiers) {
        std::vector<int32_t> got(static_cast<size_t>(m * n), 12345);
        at(t, [&] { int8_gemm(a.data(), m, k, p.w.data(), p.comp.data(), n, got.data(), 2); });
        expect(got == want, std::string("int8_gemm ") + simd_name(t) + " " + int8_kernel_name(m, full_range) + " " +
                                sz({m, k, n}));
      }
      // the linear layer: activation quantization, GEMM, dequantization fused in the store
      for (int dt = 0; dt < 2; ++dt) {
        const DType d = dt ? DType::BF16 : DType::F32;
        std::vector<float> xf(static_cast<size_t>(m * k));
        for (int64_t i = 0; i < m; ++i) {
          const float row_scale = std::ldexp(1.0f, static_cast<int>(rng.below(20)) - 10);
          for (int64_t t = 0; t < k; ++t) xf[i * k + t] = rng.uniform(-1, 1) * row_scale;
        }
        if (m > 2 && k > 0) {
          std::fill(xf.begin() + k, xf.begin() + 2 * k, 0.0f);  // an all-zero row
          xf[2 * k + k / 2] = __builtin_inff();                  // a non-finite row: NaN outputs
        }
        std::vector<uint16_t> xb(xf.size());
        for (size_t i = 0; i < xf.size(); ++i) xb[i] = to_bf16(xf[i]);
        const void* x = dt ? static_cast<const void*>(xb.data()) : xf.data();
        std::vector<float> ws(static_cast<size_t>(n)), bias(static_cast<size_t>(n));
        for (auto& v : ws) v = rng.uniform(0.001f, 0.02f);
        for (auto& v : bias) v = rng.uniform(-1, 1);
        std::vector<float> ref(static_cast<size_t>(m * n)), got(ref.size());
        std::vector<int8_t> qref(static_cast<size_t>(m * k)), qgot(qref.size());
        std::vector<float> sref(static_cast<size_t>(m)), sgot(sref.size());
        at(Simd::Scalar, [&] {
          int8_linear(x, d, m, k, p.w.data(), p.comp.data(), ws.data(), n, full_range ? bias.data() : nullptr,
                      ref.data(), 2);
          int8_quantize_rows(x, d, m, k, qref.data(), sref.data(), 2);
        });
        for (Simd t : tiers) {
          at(t, [&] {
            int8_linear(x, d, m, k, p.w.data(), p.comp.data(), ws.data(), n, full_range ? bias.data() : nullptr,
                        got.data(), 2);
            int8_quantize_rows(x, d, m, k, qgot.data(), sgot.data(), 2);
          });
          const std::string tag = std::string(simd_name(t)) + (dt ? " bf16 " : " f32 ") + sz({m, k, n});
          expect(qgot == qref, "int8_quantize_rows codes " + tag);
          bool scales = true, outs = true;
          for (int64_t i = 0; i < m; ++i) scales &= same_float(sgot[i], sref[i]);
          // same codes and int32 sums; the epilogue's float(sum) * rs * ws + b may round differently where one
          // build fuses the multiply-add: within 1e-6 of |out| + |b|
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
              const float b = full_range ? std::fabs(bias[j]) : 0.0f;
              outs &= close(got[i * n + j], ref[i * n + j], 1e-6 * b, 1e-6);
            }
          expect(scales, "int8_quantize_rows scales " + tag);
          expect(outs, "int8_linear " + tag);
        }
      }
    }
  }
  // int32 wrap-around: K * 128 * 128 > 2^31, every sum wraps (exact modulo 2^32 at every tier)
  {
    const int64_t m = 5, k = 140001, n = 3;
    std::vector<int8_t> a(static_cast<size_t>(m * k), -128), b(static_cast<size_t>(k * n), -128);
    const Packed p = pack(b, k, n, false);
    const auto want = naive_gemm(a, b, m, k, n);
    for (Simd t : tiers) {
      std::vector<int32_t> got(static_cast<size_t>(m * n));
      at(t, [&] { int8_gemm(a.data(), m, k, p.w.data(), p.comp.data(), n, got.data(), 2); });
      expect(got == want, std::string("int8_gemm wrap-around ") + simd_name(t));
    }
  }
}

// A weight packed by the x86 build (tests/test_arm.py): int64 k, n, m; B (k x n); its packed bytes and comp from
// the x86 int8_pack; A (m x k). Our pack of B must give the same bytes, and every tier's GEMM on the x86 bytes the
// naive product.
void test_x86_pack(const char* path, const std::vector<Simd>& tiers) {
  FILE* f = std::fopen(path, "rb");
  if (!f) {
    expect(false, std::string("cannot open ") + path);
    return;
  }
  int64_t dims[3] = {};
  bool ok = std::fread(dims, sizeof(int64_t), 3, f) == 3;
  const int64_t k = dims[0], n = dims[1], m = dims[2];
  std::vector<int8_t> b(static_cast<size_t>(k * n)), a(static_cast<size_t>(m * k));
  Packed x86{std::vector<int8_t>(static_cast<size_t>(int8_packed_bytes(k, n))),
             std::vector<int32_t>(static_cast<size_t>(int8_comp_size(n)))};
  ok = ok && std::fread(b.data(), 1, b.size(), f) == b.size();
  ok = ok && std::fread(x86.w.data(), 1, x86.w.size(), f) == x86.w.size();
  ok = ok && std::fread(x86.comp.data(), 4, x86.comp.size(), f) == x86.comp.size();
  ok = ok && std::fread(a.data(), 1, a.size(), f) == a.size();
  std::fclose(f);
  expect(ok, std::string("read ") + path);
  if (!ok) return;
  const Packed ours = pack(b, k, n, false);
  expect(ours.w == x86.w && ours.comp == x86.comp, "x86-packed weight == aarch64 pack " + sz({k, n}));
  const auto want = naive_gemm(a, b, m, k, n);
  for (Simd t : tiers) {
    std::vector<int32_t> got(static_cast<size_t>(m * n));
    at(t, [&] { int8_gemm(a.data(), m, k, x86.w.data(), x86.comp.data(), n, got.data(), 2); });
    expect(got == want, std::string("int8_gemm on the x86-packed weight ") + simd_name(t) + " " + sz({m, k, n}));
  }
  std::printf("x86-packed weight %s: %lld x %lld, multiplied at every tier\n", path, static_cast<long long>(k),
              static_cast<long long>(n));
}

// ---- pruning: the leaves directly (collect, histograms, masks, N:M) and the driver ------------------------------

// n elements of dtype d as raw bytes: zeros (already pruned), repeats (ties), spread magnitudes, an inf, and for
// fp16 subnormals; no NaN unless asked.
std::vector<uint8_t> prune_data(Rng& rng, DType d, int64_t n, bool nan) {
  std::vector<uint8_t> out(static_cast<size_t>(n * dtype_size(d)));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t kind = rng.below(10);
    float v = kind < 3 ? 0.0f : kind < 5 ? (rng.below(2) ? 0.5f : -0.25f) : rng.uniform(-4, 4);
    if (kind == 9 && rng.below(50) == 0) v = rng.below(2) ? __builtin_inff() : -__builtin_inff();
    if (d == DType::F32) {
      std::memcpy(out.data() + 4 * i, &v, 4);
    } else {
      uint16_t h = d == DType::BF16 ? to_bf16(v) : to_f16(v);
      if (d == DType::F16 && kind == 8) h = static_cast<uint16_t>(rng.below(0x400) | (rng.below(2) << 15));
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  if (nan && n > 0) {
    const int64_t i = rng.below(n);
    if (d == DType::F32) {
      const uint32_t q = 0x7fc00001u;
      std::memcpy(out.data() + 4 * i, &q, 4);
    } else {
      const uint16_t q = d == DType::BF16 ? 0x7fc1 : 0x7e01;
      std::memcpy(out.data() + 2 * i, &q, 2);
    }
  }
  return out;
}

const char* dname(DType d) { return d == DType::F32 ? "f32" : d == DType::F16 ? "f16" : "bf16"; }

void test_prune(const std::vector<Simd>& tiers) {
  Rng rng(2);
  const DType dts[] = {DType::F32, DType::F16, DType::BF16};
  const int64_t lens[] = {0, 1, 3, 4, 5, 7, 8, 15, 16, 17, 63, 64, 65, 255, 256, 257, 1000, 4099};
  const PruneLeaves& ref = leaves<PruneLeaves>(Simd::Scalar);
  for (Simd t : tiers) {
    const PruneLeaves& leaf = leaves<PruneLeaves>(t);
    for (DType d : dts)
      for (int64_t n : lens) {
        const std::string tag = std::string(simd_name(t)) + " " + dname(d) + " n=" + std::to_string(n);
        auto data = prune_data(rng, d, n, false);
        auto with_nan = prune_data(rng, d, n, true);
        // histograms
        std::vector<uint32_t> h0(kHiBins), h1(kHiBins);
        ref.hist_hi(data.data(), n, d, h0.data());
        leaf.hist_hi(data.data(), n, d, h1.data());
        expect(h0 == h1, "hist_hi " + tag);
        for (uint32_t hi : {0u, 0x3f00u, 0x3e80u, 0x4000u}) {
          std::vector<uint32_t> l0(kLoBins), l1(kLoBins);
          ref.hist_lo(data.data(), n, d, hi, l0.data());
          leaf.hist_lo(data.data(), n, d, hi, l1.data());
          expect(l0 == l1, "hist_lo " + tag);
        }
        expect(ref.count_nan(with_nan.data(), n, d) == leaf.count_nan(with_nan.data(), n, d), "count_nan " + tag);
        // collect, both forms, over brackets that hold the ties at their ends or not
        const uint32_t brackets[][2] = {{0, 0x7f800000u}, {0x3e800000u, 0x3f000000u}, {0x3e800001u, 0x3fffffffu},
                                        {0, 0}, {0x40000000u, 0x40800000u}, {0x3f000000u, 0x7fffffffu}};
        for (const auto& br : brackets)
          for (int mark = 0; mark < 2; ++mark) {
            const uint8_t* src = mark ? data.data() : with_nan.data();
            const int64_t cap = n + 64;
            std::vector<uint32_t> o0(cap + 64), o1(cap + 64), i0(cap + 64), i1(cap + 64);
            std::vector<uint8_t> m0(static_cast<size_t>(n), 7), m1(static_cast<size_t>(n), 7);
            CollectCounts c0{}, c1{};
            const int64_t j0 = ref.collect(src, n, d, br[0], br[1], o0.data(), i0.data(), cap, &c0,
                                           mark ? m0.data() : nullptr);
            const int64_t j1 = leaf.collect(src, n, d, br[0], br[1], o1.data(), i1.data(), cap, &c1,
                                            mark ? m1.data() : nullptr);
            bool same = j0 == j1 && j0 >= 0 && c0.below == c1.below && c0.at_lo == c1.at_lo &&
                        c0.at_hi == c1.at_hi && c0.nans == c1.nans;
            for (int64_t q = 0; same && q < j0; ++q) same = o0[q] == o1[q] && (!mark || i0[q] == i1[q]);
            if (mark) same = same && m0 == m1;
            expect(same, std::string("collect") + (mark ? "+mark " : " ") + tag);
            // a too-small buffer: -1, or else the right answer
            std::vector<uint32_t> small(16 + 64), smalli(16 + 64);
            CollectCounts cs{};
            const int64_t js = leaf.collect(src, n, d, br[0], br[1], small.data(), smalli.data(), 16, &cs,
                                            mark ? m1.data() : nullptr);
            expect(js == -1 || (js == j0 && cs.below == c0.below), "collect with a small buffer " + tag);
          }
        // masks and in-place zeroing at a threshold
        for (uint32_t lo : {0u, 1u, 0x3e800000u, 0x3f000000u, 0x40000000u, 0x7f800000u}) {
          std::vector<uint8_t> m0(static_cast<size_t>(n)), m1(static_cast<size_t>(n));
          auto z0 = data, z1 = data;
          const int64_t t0 = ref.write_mask(z0.data(), n, d, lo, m0.data(), true);
          const int64_t t1 = leaf.write_mask(z1.data(), n, d, lo, m1.data(), true);
          expect(t0 == t1 && m0 == m1 && z0 == z1, "write_mask " + tag);
          ref.prune_ties(z0.data(), n, d, lo, 3, m0.data(), true);
          leaf.prune_ties(z1.data(), n, d, lo, 3, m1.data(), true);
          expect(m0 == m1 && z0 == z1, "prune_ties " + tag);
        }
        // N:M masks; m = 4 is the vectorized one
        for (int64_t mm : {1, 2, 4, 8, 16}) {
          const int64_t groups = n / mm;
          for (int64_t keep = 0; keep <= mm; keep += (mm > 4 ? 3 : 1)) {
            std::vector<uint8_t> m0(static_cast<size_t>(groups * mm)), m1(m0.size());
            const int64_t n0 = ref.nm_mask(with_nan.data(), groups, mm, keep, d, m0.data());
            const int64_t n1 = leaf.nm_mask(with_nan.data(), groups, mm, keep, d, m1.data());
            expect(n0 == n1 && m0 == m1, "nm_mask " + std::to_string(keep) + ":" + std::to_string(mm) + " " + tag);
          }
        }
      }
  }
  // the driver: histogram selection (small) and the sample-bracketed pass (>= 2^20 elements), masks and zeroing
  for (int64_t n : {int64_t(1), int64_t(1000), int64_t(70001), int64_t((1 << 20) + 77)})
    for (DType d : dts) {
      const auto data = prune_data(rng, d, n, false);
      const auto more = prune_data(rng, DType::F32, 333, false);
      for (int64_t k : {int64_t(0), int64_t(1), n / 2, n - 1, n + 333}) {
        if (k < 0) continue;
        for (int inplace = 0; inplace < 2; ++inplace) {
          Selection s[2];
          std::vector<uint8_t> masks[2][2], bufs[2][2];
          Simd run_tiers[2] = {Simd::Scalar, tiers.back()};
          for (int r = 0; r < 2; ++r) {
            bufs[r][0] = data;
            bufs[r][1] = more;
            masks[r][0].assign(static_cast<size_t>(n), 9);
            masks[r][1].assign(333, 9);
            std::vector<PruneArray> arrays{{reinterpret_cast<char*>(bufs[r][0].data()), n, d, masks[r][0].data()},
                                           {reinterpret_cast<char*>(bufs[r][1].data()), 333, DType::F32,
                                            masks[r][1].data()}};
            at(run_tiers[r], [&] { s[r] = magnitude_prune(arrays, k, true, inplace, 2); });
          }
          int64_t kept = 0;
          for (auto& mk : masks[1])
            for (uint8_t v : mk) kept += v;
          expect(s[0].key == s[1].key && s[0].less == s[1].less && s[0].equal == s[1].equal &&
                     masks[0][0] == masks[1][0] && masks[0][1] == masks[1][1] && bufs[0][0] == bufs[1][0] &&
                     bufs[0][1] == bufs[1][1] && kept == n + 333 - k,
                 std::string("magnitude_prune ") + simd_name(tiers.back()) + " " + dname(d) + " n=" +
                     std::to_string(n) + " k=" + std::to_string(k) + (inplace ? " inplace" : ""));
        }
      }
    }
}

// ---- linear quantization -------------------------------------------------------------------------------------------

void test_quant(const std::vector<Simd>& tiers) {
  Rng rng(3);
  const int64_t shapes[][2] = {{0, 5}, {3, 0}, {1, 1}, {1, 3}, {2, 7}, {3, 16}, {5, 17}, {4, 255}, {7, 257},
                               {2, 1000}, {64, 129}, {3, 70000}};
  for (const auto& sh : shapes)
    for (int bits : {8, 4, 2})
      for (int sym = 0; sym < 2; ++sym) {
        const int64_t rows = sh[0], len = sh[1];
        std::vector<float> x(static_cast<size_t>(rows * len));
        for (int64_t r = 0; r < rows; ++r) {
          const float shift = r % 3 == 1 ? 2.0f : 0.0f;  // all-positive rows: asymmetric zero points at the edge
          for (int64_t i = 0; i < len; ++i) x[r * len + i] = rng.uniform(-1, 1) * (1 + r) + shift;
        }
        if (rows > 1 && len > 0) std::fill(x.begin() + len, x.begin() + 2 * len, 0.0f);  // a zero row
        const int64_t rb = quant_row_bytes(len, bits);
        std::vector<uint8_t> c0(static_cast<size_t>(rows * rb)), c1(c0.size());
        std::vector<float> s0(static_cast<size_t>(rows)), s1(s0.size());
        std::vector<int32_t> z0(static_cast<size_t>(rows)), z1(z0.size());
        std::vector<float> d0(x.size()), d1(x.size());
        at(Simd::Scalar, [&] {
          quantize_rows(x.data(), rows, len, bits, sym, c0.data(), s0.data(), z0.data(), 2);
          dequantize_rows(c0.data(), s0.data(), z0.data(), rows, len, bits, sym, d0.data(), 2);
        });
        for (Simd t : tiers) {
          at(t, [&] {
            quantize_rows(x.data(), rows, len, bits, sym, c1.data(), s1.data(), z1.data(), 2);
            dequantize_rows(c0.data(), s0.data(), z0.data(), rows, len, bits, sym, d1.data(), 2);
          });
          bool same = c0 == c1 && z0 == z1;
          for (int64_t r = 0; r < rows; ++r) same &= same_float(s0[r], s1[r]);
          bool deq = true;  // (code - zp) * scale: one rounding, identical at every tier
          for (size_t i = 0; i < d0.size(); ++i) deq &= same_float(d0[i], d1[i]);
          const std::string tag = std::string(simd_name(t)) + " bits=" + std::to_string(bits) +
                                  (sym ? " sym " : " asym ") + sz({rows, len});
          expect(same, "quantize_rows " + tag);
          expect(deq, "dequantize_rows " + tag);
        }
      }
}

// ---- fused KD losses -----------------------------------------------------------------------------------------------

// Logits of scale `spread` as dtype d.
std::vector<uint16_t> half_logits(const std::vector<float>& v, DType d) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = d == DType::BF16 ? to_bf16(v[i]) : to_f16(v[i]);
  return out;
}

float widen(const void* p, DType d, int64_t i) {
  if (d == DType::F32) return static_cast<const float*>(p)[i];
  const uint16_t h = static_cast<const uint16_t*>(p)[i];
  if (d == DType::BF16) return __builtin_bit_cast(float, static_cast<uint32_t>(h) << 16);
  const uint32_t e = (h >> 10) & 0x1f, mant = h & 0x3ff, sign = (h & 0x8000u) << 16;
  if (e == 0) return (h & 0x8000 ? -1.0f : 1.0f) * std::ldexp(static_cast<float>(mant), -24);
  if (e == 31) return __builtin_bit_cast(float, sign | 0x7f800000u | (mant << 13));
  return __builtin_bit_cast(float, sign | ((e + 112) << 23) | (mant << 13));
}

void test_kd(const std::vector<Simd>& tiers) {
  Rng rng(4);
  const int64_t vocab[] = {1, 3, 4, 17, 511, 512, 513, 1000, 3001};
  const DType dts[] = {DType::F32, DType::BF16, DType::F16};
  const Divergence divs[] = {Divergence::KL, Divergence::ReverseKL, Divergence::JSD, Divergence::None};
  const float temps[] = {1.0f, 2.0f, 3.5f};
  int combo = 0;
  for (int64_t V : vocab)
    for (DType d : dts)
      for (Divergence div : divs)
        for (float tau : temps) {
          const int64_t rows = (combo++ % 4);  // 0..3 rows
          std::vector<float> sf(static_cast<size_t>(rows * V)), tf(sf.size());
          for (size_t i = 0; i < sf.size(); ++i) {
            sf[i] = rng.uniform(-6, 6);
            tf[i] = rng.uniform(-6, 6);
          }
          if (rows > 1) tf[V] = -__builtin_inff();  // a teacher logit of -inf: probability 0
          std::vector<int64_t> target(static_cast<size_t>(rows));
          for (int64_t r = 0; r < rows; ++r) target[r] = r == 1 ? -100 : rng.below(V);  // one ignored row
          const auto sh = half_logits(sf, d), th = half_logits(tf, d);
          const void* s = d == DType::F32 ? static_cast<const void*>(sf.data()) : sh.data();
          const void* t = d == DType::F32 ? static_cast<const void*>(tf.data()) : th.data();
          const int64_t esz = dtype_size(d);
          std::vector<uint8_t> g0(static_cast<size_t>(rows * V * esz)), g1(g0.size());
          std::vector<float> l0(static_cast<size_t>(rows)), l1(l0.size());
          auto run = [&](std::vector<uint8_t>& g, std::vector<float>& l) {
            const int weighting = static_cast<int>((rows + V) % 2);  // info_entropy in about half of the cases
            KdProblem P{s, t, d, d, target.data(), rows, V, tau, div == Divergence::None ? 0.0f : 0.7f, div, 0.4f,
                        -100, 1.0f / 3, false, g.data(), l.data(), weighting, nullptr, nullptr};
            kd_loss(P, 2);
          };
          at(Simd::Scalar, [&] { run(g0, l0); });
          for (Simd tier : tiers) {
            at(tier, [&] { run(g1, l1); });
            const std::string tag = std::string(simd_name(tier)) + " " + dname(d) + " div=" +
                                    std::to_string(static_cast<int>(div)) + " tau=" + std::to_string(tau) + " " +
                                    sz({rows, V});
            // Sums of V terms in another order (vector lanes vs one chain) and exp of the same polynomial
            // (contracted into fused multiply-adds or not): losses within 2e-5 relative (1e-6 absolute), fp32
            // gradients within 1e-5 relative (1e-7 absolute, of gradients <= 1), and half gradients within one
            // unit of their last place (fp32 results a hair apart can round to neighbours: 2^-7 relative for
            // bf16, 2^-10 for fp16) plus 1e-7.
            bool loss_ok = true, grad_ok = true;
            for (int64_t r = 0; r < rows; ++r) loss_ok &= close(l1[r], l0[r], 1e-6, 2e-5);
            const double grel = d == DType::F32 ? 1e-5 : d == DType::BF16 ? 0x1p-7 : 0x1p-10;
            for (int64_t i = 0; i < rows * V; ++i) grad_ok &= close(widen(g1.data(), d, i), widen(g0.data(), d, i),
                                                                    1e-7, grel);
            expect(loss_ok, "kd_loss row losses " + tag);
            expect(grad_ok, "kd_loss gradient " + tag);
          }
        }
  // the sparse teacher (top-K entries)
  for (int64_t V : {int64_t(5), int64_t(513), int64_t(2000)})
    for (int kind = 0; kind < 3; ++kind)
      for (int bucket = 0; bucket < 2; ++bucket) {
        const int64_t rows = 3, K = std::min<int64_t>(V, 7);
        std::vector<float> sf(static_cast<size_t>(rows * V));
        for (auto& v : sf) v = rng.uniform(-5, 5);
        std::vector<int64_t> idx(static_cast<size_t>(rows * K)), target{1, -100, V - 1};
        std::vector<float> val(idx.size());
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < K; ++j) {
            idx[r * K + j] = (j * 37 + r) % V;
            const float lg = rng.uniform(-3, 3) - static_cast<float>(j);
            val[r * K + j] = kind == 0 ? lg : kind == 1 ? lg - 3.0f : std::exp(lg - 3.0f) / 4;
          }
        std::vector<float> g0(sf.size()), g1(sf.size()), l0(rows), l1(rows);
        auto run = [&](std::vector<float>& g, std::vector<float>& l) {
          SparseKdProblem P{sf.data(), DType::F32, idx.data(), val.data(), nullptr, target.data(), rows, V, K, 2.0f,
                            0.5f, static_cast<SparseValues>(kind), bucket == 1, -100, 1.0f, g.data(), l.data()};
          sparse_kd_loss(P, 2);
        };
        at(Simd::Scalar, [&] { run(g0, l0); });
        for (Simd tier : tiers) {
          at(tier, [&] { run(g1, l1); });
          bool ok = true;
          for (int64_t r = 0; r < rows; ++r) ok &= close(l1[r], l0[r], 1e-6, 2e-5);
          for (size_t i = 0; i < g0.size(); ++i) ok &= close(g1[i], g0[i], 1e-7, 1e-5);
          expect(ok, std::string("sparse_kd_loss ") + simd_name(tier) + " kind=" + std::to_string(kind) +
                         " bucket=" + std::to_string(bucket) + " V=" + std::to_string(V));
        }
      }
}

// ---- CSR matmul ----------------------------------------------------------------------------------------------------

void test_sparse(const std::vector<Simd>& tiers) {
  Rng rng(5);
  const int64_t shapes[][2] = {{1, 1}, {1, 9}, {5, 3}, {17, 33}, {64, 100}, {130, 257}, {300, 1000}};
  const int64_t batches[] = {0, 1, 2, 3, 4, 5, 8, 17, 33, 70};
  for (const auto& sh : shapes)
    for (int vals = 0; vals < 3; ++vals)
      for (int i16 = 0; i16 < 2; ++i16) {
        const int64_t rows = sh[0], cols = sh[1];
        // rows of 0 up to ~cols / 2 nonzeros (some empty), sorted distinct columns
        std::vector<int64_t> indptr{0};
        std::vector<int32_t> idx32;
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t want = r % 5 == 2 ? 0 : rng.below(cols / 2 + 2);
          for (int64_t c = 0; c < cols; ++c)
            if (rng.below(cols) < want) idx32.push_back(static_cast<int32_t>(c));
          indptr.push_back(static_cast<int64_t>(idx32.size()));
        }
        const int64_t nnz = static_cast<int64_t>(idx32.size());
        std::vector<uint16_t> idx16(idx32.begin(), idx32.end());
        std::vector<float> wf(static_cast<size_t>(nnz)), scale(static_cast<size_t>(rows));
        std::vector<uint16_t> wb(wf.size());
        std::vector<int8_t> wi(wf.size());
        for (int64_t j = 0; j < nnz; ++j) {
          wi[j] = static_cast<int8_t>(rng.below(255) - 127);
          wf[j] = rng.uniform(-1, 1);
          wb[j] = to_bf16(wf[j]);
        }
        for (auto& s : scale) s = rng.uniform(0.001f, 0.01f);
        const Val vt = vals == 0 ? Val::F32 : vals == 1 ? Val::BF16 : Val::I8;
        const void* values = vals == 0 ? static_cast<const void*>(wf.data()) : vals == 1 ? static_cast<const void*>(wb.data())
                                                                                          : wi.data();
        const Csr w{indptr.data(), i16 ? static_cast<const void*>(idx16.data()) : idx32.data(), values,
                    vt == Val::I8 ? scale.data() : nullptr, rows, cols, nnz, i16 == 1, vt};
        auto weight = [&](int64_t j) {
          return vt == Val::F32 ? wf[j] : vt == Val::BF16 ? widen(wb.data(), DType::BF16, j) : float(wi[j]);
        };
        std::vector<float> bias(static_cast<size_t>(rows));
        for (auto& b : bias) b = rng.uniform(-1, 1);
        for (int64_t M : batches) {
          if (rows * cols > 100000 && M != 1 && M != 4 && M != 33) continue;  // the large shape: a few batches
          std::vector<float> xs(static_cast<size_t>(M * cols)), xt(xs.size());  // sample-major, feature-major
          for (auto& v : xs) v = rng.uniform(-1, 1);
          for (int64_t m = 0; m < M; ++m)
            for (int64_t c = 0; c < cols; ++c) xt[c * M + m] = xs[m * cols + c];
          // the exact product (double, without bias) and the size of its terms, for the tolerance
          std::vector<double> want(static_cast<size_t>(M * rows)), mag(want.size());
          for (int64_t m = 0; m < M; ++m)
            for (int64_t r = 0; r < rows; ++r) {
              double sum = 0, a = 0;
              for (int64_t j = indptr[r]; j < indptr[r + 1]; ++j) {
                const double term = double(weight(j)) * xs[m * cols + idx32[j]] * (vt == Val::I8 ? scale[r] : 1.0f);
                sum += term;
                a += std::fabs(term);
              }
              want[m * rows + r] = sum;
              mag[m * rows + r] = a;
            }
          for (int layout = 0; layout < 4; ++layout) {  // x and out sample-major or feature-major
            const bool xfm = layout & 1, ofm = layout & 2;
            const bool with_bias = (M + layout) % 2;
            for (Simd t : {Simd::Scalar, tiers[0], tiers.back()}) {
              std::vector<float> out(static_cast<size_t>(M * rows), -7.0f);
              at(t, [&] {
                sparse_matmul(w, xfm ? xt.data() : xs.data(), M, xfm, out.data(), ofm,
                              with_bias ? bias.data() : nullptr, 2);
              });
              // fp32 sums of up to 500 terms in some order: within 1e-6 of the sum of the terms' magnitudes
              bool ok = true;
              for (int64_t m = 0; m < M; ++m)
                for (int64_t r = 0; r < rows; ++r) {
                  const float got = ofm ? out[r * M + m] : out[m * rows + r];
                  const double b = with_bias ? bias[r] : 0.0;
                  ok &= std::fabs(got - (want[m * rows + r] + b)) <= 1e-6 * (mag[m * rows + r] + std::fabs(b)) + 1e-7;
                }
              expect(ok, std::string("sparse_matmul ") + simd_name(t) + " vals=" + std::to_string(vals) +
                             " idx16=" + std::to_string(i16) + " layout=" + std::to_string(layout) + " " +
                             sz({rows, cols, M}));
            }
          }
        }
        // a column index out of range: an exception at every tier, never a read outside x
        if (nnz > 0) {
          auto bad32 = idx32;
          auto bad16 = idx16;
          bad32[nnz / 2] = static_cast<int32_t>(cols + 5);
          bad16[nnz / 2] = static_cast<uint16_t>(cols + 5);
          const Csr wbad{indptr.data(), i16 ? static_cast<const void*>(bad16.data()) : bad32.data(), values,
                         w.scale, rows, cols, nnz, i16 == 1, vt};
          for (Simd t : tiers)
            for (int64_t M : {int64_t(1), int64_t(9)}) {
              std::vector<float> x(static_cast<size_t>(M * cols), 1.0f), out(static_cast<size_t>(M * rows));
              bool threw = false;
              at(t, [&] {
                try {
                  sparse_matmul(wbad, x.data(), M, false, out.data(), false, nullptr, 2);
                } catch (const std::invalid_argument&) {
                  threw = true;
                }
              });
              expect(threw, std::string("sparse_matmul out-of-range index raises ") + simd_name(t));
            }
        }
      }
}

// ---- tier selection ------------------------------------------------------------------------------------------------

// Whether set_simd_level(name) raises std::invalid_argument with `says` in its message.
bool level_raises(const char* name, const char* says) {
  try {
    set_simd_level(name);
  } catch (const std::invalid_argument& e) {
    return std::string(e.what()).find(says) != std::string::npos;
  }
  return false;
}

// ---- int4 linear: W4A8 runs the int8 GEMM's arm kernels on each scale group's unpacked codes -------------------

void test_int4(const std::vector<Simd>& tiers) {
  const int64_t sizes[][4] = {{1, 64, 8, 64}, {3, 256, 70, 128}, {5, 128, 64, 32}, {17, 384, 130, 128},
                              {0, 64, 8, 64},  {2, 64, 0, 16},    {3, 12, 9, 4},    {6, 40, 65, 8}};  // m, k, n, g
  Rng rng(4);
  for (const auto& sz4 : sizes) {
    const int64_t m = sz4[0], k = sz4[1], n = sz4[2], g = sz4[3];
    std::vector<uint8_t> codes(static_cast<size_t>(n * k / 2));
    for (auto& c : codes) c = static_cast<uint8_t>(rng.below(256));
    std::vector<float> scale(static_cast<size_t>(n * (k / g))), x(static_cast<size_t>(m * k)), bias(n);
    for (auto& v : scale) v = rng.uniform(0.01f, 0.1f);
    for (auto& v : x) v = rng.uniform(-2.0f, 2.0f);
    for (auto& v : bias) v = rng.uniform(-1.0f, 1.0f);
    std::vector<uint8_t> packed(static_cast<size_t>(int4_packed_bytes(k, n, g)));
    int4_pack(codes.data(), scale.data(), n, k, g, packed.data(), 2);
    for (bool act_int8 : {true, false}) {
      std::vector<float> want(static_cast<size_t>(m * n)), got(want.size());
      at(Simd::Scalar, [&] {
        int4_linear(x.data(), DType::F32, m, k, packed.data(), g, n, bias.data(), want.data(), act_int8, 2);
      });
      for (Simd tier : tiers) {
        std::fill(got.begin(), got.end(), -1.0f);
        at(tier, [&] {
          int4_linear(x.data(), DType::F32, m, k, packed.data(), g, n, bias.data(), got.data(), act_int8, 2);
        });
        bool ok = true;  // the same int32 group sums and the same float epilogue: equal up to the sum's order
        for (size_t i = 0; i < want.size(); ++i) ok &= close(got[i], want[i], 1e-5, 1e-5);
        expect(ok, std::string("int4_linear ") + (act_int8 ? "W4A8 " : "W4A16 ") + simd_name(tier) +
                       sz({m, k, n, g}));
      }
    }
  }
}

void test_levels() {
  expect(level_raises("avx2", "not a tier of this aarch64 build"), "set_simd_level('avx2') raises on aarch64");
  expect(level_raises("sse9", "expected 'scalar', 'neon' or 'neon_dot'"), "set_simd_level('sse9') raises");
  if (detected_simd_level() != Simd::NeonDot)
    expect(level_raises("neon_dot", "supports at most 'neon'"),
           "set_simd_level('neon_dot') raises on a CPU without the dot product");
}

}  // namespace

int main(int argc, char** argv) {
  const char* x86_pack = nullptr;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--x86-pack" && i + 1 < argc) x86_pack = argv[++i];
  std::vector<Simd> tiers;  // the arm tiers this CPU runs
  for (Simd s : supported_simd_levels())
    if (s != Simd::Scalar) tiers.push_back(s);
  std::printf("detected tier: %s; tiers tested against scalar:", simd_name(detected_simd_level()));
  for (Simd s : tiers) std::printf(" %s", simd_name(s));
  std::printf("%s\n", detected_simd_level() == Simd::NeonDot ? "" : " (neon_dot skipped: no dot product on this CPU)");
  std::printf("int8 GEMM kernel per tier:");
  for (Simd s : supported_simd_levels()) {
    set_simd_level(simd_name(s));
    std::printf(" %s=%s", simd_name(s), int8_kernel_name(16, true));
  }
  std::printf("\ncpu features:");
  for (const auto& [name, on] : cpu_features()) std::printf(" %s=%d", name.c_str(), on ? 1 : 0);
  std::printf("\n");
  if (tiers.empty()) {
    std::printf("FAIL no arm tier available (expected at least neon on aarch64)\n");
    return 1;
  }
  const std::pair<const char*, std::function<void()>> families[] = {
      {"int8", [&] { test_int8(tiers); }},     {"int4", [&] { test_int4(tiers); }},
      {"prune", [&] { test_prune(tiers); }},
      {"quant", [&] { test_quant(tiers); }},   {"kd", [&] { test_kd(tiers); }},
      {"sparse", [&] { test_sparse(tiers); }}, {"levels", [] { test_levels(); }},
  };
  for (const auto& [name, fn] : families) {
    const int before_checks = g_checks, before_fails = g_fails;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      fn();
    } catch (const std::exception& e) {
      expect(false, std::string(name) + ": unexpected exception: " + e.what());
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%-7s %5d checks, %d failed (%.1f s)\n", name, g_checks - before_checks, g_fails - before_fails, secs);
  }
  if (x86_pack) test_x86_pack(x86_pack, tiers);
  std::printf("%s: %d checks, %d failed\n", g_fails ? "FAILED" : "OK", g_checks, g_fails);
  return g_fails ? 1 : 0;
}
