// int8 x int8 -> int32 GEMM on a prepacked weight (int8_isa.h describes the layout) and the dynamic-quantization
// linear layer built on it: per-row activation quantization, GEMM, and the dequantization epilogue fused into the
// GEMM's store. Also the two halves of the linear layer on their own (quantize rows; epilogue over an int32
// product), for when the GEMM itself runs elsewhere (torch._int_mm).
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "common.h"
#include "int8_isa.h"

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

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

void require_shape(const py::array& a, const char* argname, std::initializer_list<int64_t> shape) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  int i = 0;
  for (int64_t d : shape) ok = ok && a.shape(i++) == d;
  if (!ok) {
    std::string want = "(";
    i = 0;
    for (int64_t d : shape) want += (i++ ? ", " : "") + std::to_string(d);
    throw py::value_error(std::string(argname) + ": expected shape " + want + (shape.size() == 1 ? ",)" : ")") +
                          ", got " + shape_str(a));
  }
}

// Checks the packed weight of a K x N matrix; returns the number of k groups.
int64_t check_packed(const py::array& packed, const py::array& comp, int64_t k, int64_t n) {
  require_dtype<int8_t>(packed, "packed");
  require_c_contiguous(packed, "packed");
  require_dtype<int32_t>(comp, "comp");
  require_c_contiguous(comp, "comp");
  require_shape(packed, "packed", {n_panels(n) * k_groups(k) * kGroupBytes});
  require_shape(comp, "comp", {n_panels(n) * kPanel});
  return k_groups(k);
}

// Rows of the u8 copy of A: whole 32-row tiles (zero rows past m) for AMX, which loads them; just m otherwise.
int64_t a_rows(const Int8Leaves& leaf, int64_t m) { return leaf.gemm_panel == amx::gemm_panel ? padded_rows(m) : m; }

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

// b: K x N int8 with any (non-negative) strides, e.g. the transpose view of an N x K weight.
void int8_pack(const py::array& b, const py::array& packed, const py::array& comp, int nthreads) {
  require_dtype<int8_t>(b, "b");
  if (b.ndim() != 2) throw py::value_error("b: expected a 2-D array, got shape " + shape_str(b));
  if (b.strides(0) < 0 || b.strides(1) < 0) throw py::value_error("b: negative strides are not supported");
  const int64_t k = b.shape(0), n = b.shape(1), sk = b.strides(0), sn = b.strides(1);
  const int64_t kg = check_packed(packed, comp, k, n);
  require_writeable(packed, "packed");
  require_writeable(comp, "comp");
  const auto* src = static_cast<const int8_t*>(b.data());
  auto* dst = static_cast<int8_t*>(const_cast<void*>(packed.data()));
  auto* cp = static_cast<int32_t*>(const_cast<void*>(comp.data()));
  py::gil_scoped_release nogil;
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

// out (M x N int32) = a (M x K int8) @ B, B given packed.
void int8_gemm(const py::array& a, const py::array& packed, const py::array& comp, int64_t n, const py::array& out,
               int nthreads) {
  require_dtype<int8_t>(a, "a");
  require_c_contiguous(a, "a");
  if (a.ndim() != 2) throw py::value_error("a: expected a 2-D array, got shape " + shape_str(a));
  const int64_t m = a.shape(0), k = a.shape(1);
  if (n < 0) throw py::value_error("n: expected n >= 0, got " + std::to_string(n));
  const int64_t kg = check_packed(packed, comp, k, n);
  require_dtype<int32_t>(out, "out");
  require_c_contiguous(out, "out");
  require_writeable(out, "out");
  require_shape(out, "out", {m, n});
  const auto* src = static_cast<const uint8_t*>(a.data());
  const auto* pk = static_cast<const int8_t*>(packed.data());
  const Int8Epilogue e{static_cast<const int32_t*>(comp.data()), static_cast<int32_t*>(const_cast<void*>(out.data())),
                       nullptr, n, nullptr, nullptr, nullptr};
  const Int8Leaves leaf = int8_leaves(m);
  nthreads = clamp_threads(nthreads);
  py::gil_scoped_release nogil;
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

const float* optional_vector(const py::object& v, const char* argname, int64_t n) {
  if (v.is_none()) return nullptr;
  const auto arr = py::cast<py::array>(v);
  require_dtype<float>(arr, argname);
  require_c_contiguous(arr, argname);
  require_shape(arr, argname, {n});
  return static_cast<const float*>(arr.data());
}

// out (M x N fp32) = (quantize_rows(x) @ B) * row_scale * wscale + bias, B given packed.
void int8_linear(const py::array& x, const py::array& packed, const py::array& comp, const py::array& wscale,
                 const py::object& bias, const py::array& out, int nthreads) {
  const DType dt = float_dtype_of(x, "x");
  if (dt == DType::F16) throw py::type_error("x: expected float32 or bfloat16 (as uint16 bits), got float16");
  require_c_contiguous(x, "x");
  if (x.ndim() != 2) throw py::value_error("x: expected a 2-D array, got shape " + shape_str(x));
  const int64_t m = x.shape(0), k = x.shape(1);
  require_dtype<float>(wscale, "wscale");
  require_c_contiguous(wscale, "wscale");
  if (wscale.ndim() != 1) throw py::value_error("wscale: expected a 1-D array, got shape " + shape_str(wscale));
  const int64_t n = wscale.shape(0);
  const int64_t kg = check_packed(packed, comp, k, n);
  const float* bp = optional_vector(bias, "bias", n);
  require_dtype<float>(out, "out");
  require_c_contiguous(out, "out");
  require_writeable(out, "out");
  require_shape(out, "out", {m, n});
  const void* xp = x.data();
  const auto* pk = static_cast<const int8_t*>(packed.data());
  const Int8Leaves leaf = int8_leaves(m);
  nthreads = clamp_threads(nthreads);
  py::gil_scoped_release nogil;
  if (m == 0 || n == 0) return;
  const int64_t lda = 4 * kg, esz = dt == DType::F32 ? 4 : 2;
  std::vector<uint8_t> ua(static_cast<size_t>(a_rows(leaf, m) * lda));
  std::vector<float> rs(static_cast<size_t>(m));
#pragma omp parallel for num_threads(row_threads(m, k, nthreads)) schedule(static)
  for (int64_t r = 0; r < m; ++r)
    leaf.quantize_rows(static_cast<const char*>(xp) + r * k * esz, dt, 1, k, ua.data() + r * lda, lda, nullptr,
                       rs.data() + r);
  const Int8Epilogue e{static_cast<const int32_t*>(comp.data()), nullptr,
                       static_cast<float*>(const_cast<void*>(out.data())), n, rs.data(),
                       static_cast<const float*>(wscale.data()), bp};
  run_gemm(leaf, ua.data(), lda, m, pk, kg, n, e, nthreads);
}

// q (M x K int8), scales (M fp32) = symmetric per-row quantization of x.
void int8_quantize_rows(const py::array& x, const py::array& q, const py::array& scales, int nthreads) {
  const DType dt = float_dtype_of(x, "x");
  if (dt == DType::F16) throw py::type_error("x: expected float32 or bfloat16 (as uint16 bits), got float16");
  require_c_contiguous(x, "x");
  if (x.ndim() != 2) throw py::value_error("x: expected a 2-D array, got shape " + shape_str(x));
  const int64_t m = x.shape(0), k = x.shape(1);
  require_dtype<int8_t>(q, "q");
  require_c_contiguous(q, "q");
  require_writeable(q, "q");
  require_shape(q, "q", {m, k});
  require_dtype<float>(scales, "scales");
  require_c_contiguous(scales, "scales");
  require_writeable(scales, "scales");
  require_shape(scales, "scales", {m});
  const void* xp = x.data();
  auto* qp = static_cast<int8_t*>(const_cast<void*>(q.data()));
  auto* sp = static_cast<float*>(const_cast<void*>(scales.data()));
  const Int8Leaves leaf = int8_leaves(0);  // quantize_rows only: the same leaf at every row count
  py::gil_scoped_release nogil;
  const int64_t esz = dt == DType::F32 ? 4 : 2;
#pragma omp parallel for num_threads(row_threads(m, k, clamp_threads(nthreads))) schedule(static)
  for (int64_t r = 0; r < m; ++r)
    leaf.quantize_rows(static_cast<const char*>(xp) + r * k * esz, dt, 1, k, nullptr, 0, qp + r * k, sp + r);
}

// out (M x N fp32) = float(c) * row_scale[:, None] * col_scale[None, :] + bias.
void int8_dequantize(const py::array& c, const py::array& row_scale, const py::array& col_scale,
                     const py::object& bias, const py::array& out, int nthreads) {
  require_dtype<int32_t>(c, "c");
  require_c_contiguous(c, "c");
  if (c.ndim() != 2) throw py::value_error("c: expected a 2-D array, got shape " + shape_str(c));
  const int64_t m = c.shape(0), n = c.shape(1);
  require_dtype<float>(row_scale, "row_scale");
  require_c_contiguous(row_scale, "row_scale");
  require_shape(row_scale, "row_scale", {m});
  require_dtype<float>(col_scale, "col_scale");
  require_c_contiguous(col_scale, "col_scale");
  require_shape(col_scale, "col_scale", {n});
  const float* bp = optional_vector(bias, "bias", n);
  require_dtype<float>(out, "out");
  require_c_contiguous(out, "out");
  require_writeable(out, "out");
  require_shape(out, "out", {m, n});
  const auto* cp = static_cast<const int32_t*>(c.data());
  const auto* rs = static_cast<const float*>(row_scale.data());
  const auto* cs = static_cast<const float*>(col_scale.data());
  auto* op = static_cast<float*>(const_cast<void*>(out.data()));
  py::gil_scoped_release nogil;
#pragma omp parallel for num_threads(clamp_threads(nthreads)) schedule(static)
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < n; ++j) {
      const float v = static_cast<float>(cp[r * n + j]) * rs[r] * cs[j];
      op[r * n + j] = bp ? v + bp[j] : v;
    }
}
std::atomic<bool> g_amx{true};
}  // namespace

bool int8_amx_enabled() { return g_amx.load(std::memory_order_relaxed); }

void bind_int8(py::module_& m) {
  m.def("int8_set_amx", [](bool on) { g_amx.store(on, std::memory_order_relaxed); }, py::arg("enabled"),
        "Allow (default) or forbid the AMX int8 kernel at the avx512 level; for tests and benchmarks.");
  m.def("int8_amx_in_use", [](int64_t m) {
          return m >= kAmxMinRows && simd_level() == Simd::Avx512 && int8_amx_enabled() && amx::available(); },
        py::arg("m") = kAmxMinRows, "Whether an int8 GEMM of m rows runs on AMX tiles now.");
  m.attr("INT8_PANEL") = kPanel;
  m.def("int8_pack", &int8_pack, py::arg("b"), py::arg("packed"), py::arg("comp"), py::arg("nthreads") = 1,
        "Packs b (K x N int8, any strides) into the GEMM's panel layout (size n_panels * k_groups * 256) and the "
        "shift compensation comp[n] = 128 * sum_k b[k, n] (size n_panels * 64).");
  m.def("int8_gemm", &int8_gemm, py::arg("a"), py::arg("packed"), py::arg("comp"), py::arg("n"), py::arg("out"),
        py::arg("nthreads") = 1, "out (M x N int32) = a (M x K int8) @ b, b packed by int8_pack; exact (int32 wraps).");
  m.def("int8_linear", &int8_linear, py::arg("x"), py::arg("packed"), py::arg("comp"), py::arg("wscale"),
        py::arg("bias"), py::arg("out"), py::arg("nthreads") = 1,
        "out (M x N fp32) = dynamic per-row int8 quantization of x (fp32 or bf16 bits) @ packed int8 weight, "
        "dequantized by row scale x wscale, + bias (or None).");
  m.def("int8_quantize_rows", &int8_quantize_rows, py::arg("x"), py::arg("q"), py::arg("scales"),
        py::arg("nthreads") = 1, "Symmetric per-row int8 quantization: scales = absmax / 127, q = round(x / scale).");
  m.def("int8_dequantize", &int8_dequantize, py::arg("c"), py::arg("row_scale"), py::arg("col_scale"),
        py::arg("bias"), py::arg("out"), py::arg("nthreads") = 1,
        "out (M x N fp32) = c (int32) * row_scale[:, None] * col_scale[None, :] + bias (or None).");
}
}  // namespace fd
