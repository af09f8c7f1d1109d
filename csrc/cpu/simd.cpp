// Run-time SIMD selection: the best tier this build and CPU (and OS) support, overridable for tests and benchmarks
// with set_simd_level() or the FASTDISTILL_SIMD environment variable (x86-64: scalar | avx2 | avx512; aarch64:
// scalar | neon | neon_dot). FASTDISTILL_SIMD naming a tier this build or CPU lacks (an x86 tier on ARM, avx512 on
// an AVX2 CPU) falls back to the detected tier; set_simd_level() raises instead.
#include <atomic>
#include <cstdlib>
#include <stdexcept>

#include "core.h"

#if FD_ARM64 && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace fd {
namespace {
// This build's tiers, lowest first.
#if FD_X86
constexpr Simd kBuilt[] = {Simd::Scalar, Simd::Avx2, Simd::Avx512};
constexpr const char* kBuiltNames = "'scalar', 'avx2' or 'avx512'";
constexpr const char* kArch = "x86-64";
#elif FD_ARM64
constexpr Simd kBuilt[] = {Simd::Scalar, Simd::Neon, Simd::NeonDot};
constexpr const char* kBuiltNames = "'scalar', 'neon' or 'neon_dot'";
constexpr const char* kArch = "aarch64";
#else
constexpr Simd kBuilt[] = {Simd::Scalar};
constexpr const char* kBuiltNames = "'scalar'";
constexpr const char* kArch = "this architecture";
#endif
constexpr Simd kEvery[] = {Simd::Scalar, Simd::Avx2, Simd::Avx512, Simd::Neon, Simd::NeonDot};

// Position of a tier in kBuilt (its order), -1 when this build lacks it.
int rank(Simd s) {
  for (int i = 0; i < static_cast<int>(sizeof(kBuilt) / sizeof(kBuilt[0])); ++i)
    if (kBuilt[i] == s) return i;
  return -1;
}

#if FD_ARM64 && defined(__linux__)
unsigned long hwcap() { return getauxval(AT_HWCAP); }
#endif

Simd detect() {
#if FD_X86
  __builtin_cpu_init();
  // AVX-512 tier needs F/BW/VL/DQ (the kernels use byte masks and 16-bit lanes); VNNI/BF16 are queried separately.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return Simd::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    return Simd::Avx2;
#elif FD_ARM64 && defined(__linux__)
  const unsigned long hw = hwcap();
  if ((hw & HWCAP_ASIMD) && (hw & HWCAP_ASIMDDP)) return Simd::NeonDot;
  if (hw & HWCAP_ASIMD) return Simd::Neon;
#elif FD_ARM64  // no auxiliary vector (macOS, Windows): Advanced SIMD is part of every aarch64 core
#if defined(__ARM_FEATURE_DOTPROD)
  return Simd::NeonDot;
#else
  return Simd::Neon;
#endif
#endif
  return Simd::Scalar;
}

// Any tier's name (of this build or not) -> the tier.
bool parse(const std::string& s, Simd* out) {
  for (Simd t : kEvery)
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
  for (Simd t : kBuilt)
    if (rank(t) <= rank(detected_simd_level())) out.push_back(t);
  return out;
}

Simd simd_level() {
  int v = g_level.load(std::memory_order_relaxed);
  if (v < 0) {
    Simd want = detected_simd_level();
    const char* env = std::getenv("FASTDISTILL_SIMD");
    if (env && *env && parse(env, &want) && (rank(want) < 0 || rank(want) > rank(detected_simd_level())))
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
    case Simd::Neon: return "neon";
    case Simd::NeonDot: return "neon_dot";
    default: return "scalar";
  }
}

void set_simd_level(const std::string& name) {
  Simd want;
  if (!parse(name, &want))
    throw std::invalid_argument("level: expected " + std::string(kBuiltNames) + ", got '" + name + "'");
  if (rank(want) < 0)
    throw std::invalid_argument("level: '" + name + "' is not a tier of this " + kArch + " build (expected " +
                                kBuiltNames + ")");
  if (rank(want) > rank(detected_simd_level()))
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
#elif FD_ARM64 && defined(__linux__)
  const unsigned long hw = hwcap();
  d.emplace_back("asimd", (hw & HWCAP_ASIMD) != 0);
  d.emplace_back("asimddp", (hw & HWCAP_ASIMDDP) != 0);
  d.emplace_back("asimdhp", (hw & HWCAP_ASIMDHP) != 0);
  d.emplace_back("sve", (hw & HWCAP_SVE) != 0);
#endif
  return d;
}
}  // namespace fd
