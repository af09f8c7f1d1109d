// Run-time SIMD selection: the best level the CPU (and OS) supports, overridable for tests and benchmarks with
// set_simd_level() or the FASTDISTILL_SIMD environment variable (scalar | avx2 | avx512).
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "common.h"

namespace fd {
namespace {
Simd detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // AVX-512 tier needs F/BW/VL/DQ (the kernels use byte masks and 16-bit lanes); VNNI/BF16 are queried separately.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return Simd::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    return Simd::Avx2;
#endif
  return Simd::Scalar;
}

Simd parse(const char* s, Simd fallback) {
  if (!s || !*s) return fallback;
  if (!std::strcmp(s, "scalar")) return Simd::Scalar;
  if (!std::strcmp(s, "avx2")) return Simd::Avx2;
  if (!std::strcmp(s, "avx512")) return Simd::Avx512;
  return fallback;
}

std::atomic<int> g_level{-1};
}  // namespace

Simd detected_simd_level() {
  static const Simd best = detect();
  return best;
}

Simd simd_level() {
  int v = g_level.load(std::memory_order_relaxed);
  if (v < 0) {
    Simd want = parse(std::getenv("FASTDISTILL_SIMD"), detected_simd_level());
    if (static_cast<int>(want) > static_cast<int>(detected_simd_level())) want = detected_simd_level();
    v = static_cast<int>(want);
    g_level.store(v, std::memory_order_relaxed);
  }
  return static_cast<Simd>(v);
}

const char* simd_name(Simd s) {
  switch (s) {
    case Simd::Avx512: return "avx512";
    case Simd::Avx2: return "avx2";
    default: return "scalar";
  }
}

void set_simd_level_str(const std::string& name) {
  Simd want;
  if (name == "scalar") want = Simd::Scalar;
  else if (name == "avx2") want = Simd::Avx2;
  else if (name == "avx512") want = Simd::Avx512;
  else throw py::value_error("level: expected 'scalar', 'avx2' or 'avx512', got '" + name + "'");
  if (static_cast<int>(want) > static_cast<int>(detected_simd_level()))
    throw py::value_error("level: this CPU supports at most '" + std::string(simd_name(detected_simd_level())) +
                          "', cannot use '" + name + "'");
  g_level.store(static_cast<int>(want), std::memory_order_relaxed);
}

py::dict cpu_features() {
  py::dict d;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  d["avx2"] = bool(__builtin_cpu_supports("avx2"));
  d["fma"] = bool(__builtin_cpu_supports("fma"));
  d["f16c"] = bool(__builtin_cpu_supports("f16c"));
  d["avx512f"] = bool(__builtin_cpu_supports("avx512f"));
  d["avx512bw"] = bool(__builtin_cpu_supports("avx512bw"));
  d["avx512vnni"] = bool(__builtin_cpu_supports("avx512vnni"));
  d["avx512bf16"] = bool(__builtin_cpu_supports("avx512bf16"));
#endif
  return d;
}

void bind_simd(py::module_& m) {
  m.def("simd_level", [] { return std::string(simd_name(simd_level())); }, "SIMD level the kernels use now.");
  m.def("detected_simd_level", [] { return std::string(simd_name(detected_simd_level())); },
        "Best SIMD level this CPU supports.");
  m.def("set_simd_level", &set_simd_level_str, py::arg("level"),
        "Force 'scalar', 'avx2' or 'avx512' (at most the detected level); for tests and benchmarks.");
  m.def("cpu_features", &cpu_features, "CPU feature flags relevant to the kernels.");
}
}  // namespace fd
