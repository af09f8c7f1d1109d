// Run-time SIMD selection: the best tier this build and CPU (and OS) support, overridable for tests and benchmarks
// with set_simd_level() or the FASTDISTILL_SIMD environment variable (scalar | avx2 | avx512).
#include <atomic>
#include <cstdlib>
#include <stdexcept>

#include "core.h"

namespace fd {
namespace {
constexpr Simd kAll[] = {Simd::Scalar, Simd::Avx2, Simd::Avx512};

Simd detect() {
#if FD_X86
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

bool parse(const std::string& s, Simd* out) {
  for (Simd t : kAll)
    if (s == simd_name(t)) {
      *out = t;
      return true;
    }
  return false;
}

std::atomic<int> g_level{-1};
}  // namespace

Simd detected_simd_level() {
  static const Simd best = detect();
  return best;
}

std::vector<Simd> supported_simd_levels() {
  std::vector<Simd> out;
  for (Simd t : kAll)
    if (static_cast<int>(t) <= static_cast<int>(detected_simd_level())) out.push_back(t);
  return out;
}

Simd simd_level() {
  int v = g_level.load(std::memory_order_relaxed);
  if (v < 0) {
    Simd want = detected_simd_level();
    const char* env = std::getenv("FASTDISTILL_SIMD");
    if (env && *env && parse(env, &want) && static_cast<int>(want) > static_cast<int>(detected_simd_level()))
      want = detected_simd_level();
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

void set_simd_level(const std::string& name) {
  Simd want;
  if (!parse(name, &want)) throw std::invalid_argument("level: expected 'scalar', 'avx2' or 'avx512', got '" + name + "'");
  if (static_cast<int>(want) > static_cast<int>(detected_simd_level()))
    throw std::invalid_argument("level: this CPU supports at most '" + std::string(simd_name(detected_simd_level())) +
                                "', cannot use '" + name + "'");
  g_level.store(static_cast<int>(want), std::memory_order_relaxed);
}

std::vector<std::pair<std::string, bool>> cpu_features() {
  std::vector<std::pair<std::string, bool>> d;
#if FD_X86
  __builtin_cpu_init();
  d.emplace_back("avx2", __builtin_cpu_supports("avx2"));
  d.emplace_back("fma", __builtin_cpu_supports("fma"));
  d.emplace_back("f16c", __builtin_cpu_supports("f16c"));
  d.emplace_back("avx512f", __builtin_cpu_supports("avx512f"));
  d.emplace_back("avx512bw", __builtin_cpu_supports("avx512bw"));
  d.emplace_back("avx512vnni", __builtin_cpu_supports("avx512vnni"));
  d.emplace_back("avx512bf16", __builtin_cpu_supports("avx512bf16"));
#endif
  return d;
}
}  // namespace fd
