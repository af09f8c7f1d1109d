// Plain-C++ foundations of the CPU kernels: the SIMD tier in use, element types, thread counts, and the one way an
// op family declares its per-tier leaf table and picks it at run time. No Python headers: kernel translation units
// see only this; the pybind11 glue (argument checks, GIL release, registration) lives in csrc/bind/.
//
// Tiers. Each op family writes its leaf kernels once, in csrc/cpu/<family>_kernels.h, and compiles that header once
// per tier: csrc/cpu/<family>_scalar.cpp (every architecture) and, on x86-64 only, csrc/cpu/x86/<family>_avx2.cpp
// and _avx512.cpp, on aarch64 only, csrc/cpu/arm/<family>_neon.cpp (and int8_neon_dot.cpp) (setup.py picks the
// x86 or arm files from the target architecture; only they hold intrinsics and `#pragma GCC target`). Each tier
// file includes its tier header first (cpu/tier_scalar.h, cpu/x86/tier_*.h, cpu/arm/tier_*.h),
// which sets FD_TIER (one of the FD_TIER_* values below) and FD_TIER_NS (the namespace its leaves live in), then
// the family's kernels header, which ends by defining the family's table for that tier:
//
//   template <> const PruneLeaves& tier_leaves<PruneLeaves, FD_TIER_SIMD>() { static constexpr PruneLeaves t{..};
//                                                                             return t; }
//
// The family's _isa.h declares the table struct and FD_DECLARE_TIER_LEAVES(PruneLeaves); drivers call
// leaves<PruneLeaves>() (the tier in use) or leaves<PruneLeaves>(Simd::Avx2).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#define FD_X86 1
#else
#define FD_X86 0
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
#define FD_ARM64 1
#else
#define FD_ARM64 0
#endif

// Values of FD_TIER, one per Simd enumerator (kernels test `#if FD_TIER == FD_TIER_AVX512`; the arm tiers, and only
// they, are `FD_TIER >= FD_TIER_NEON`).
#define FD_TIER_SCALAR 0
#define FD_TIER_AVX2 1
#define FD_TIER_AVX512 2
#define FD_TIER_NEON 3
#define FD_TIER_NEON_DOT 4

namespace fd {

// SIMD tiers. The x86 tiers exist in x86-64 builds only, the arm ones (neon: Advanced SIMD, every aarch64 core;
// neon_dot: + the ARMv8.2 dot product, sdot) in aarch64 builds only.
enum class Simd : int {
  Scalar = FD_TIER_SCALAR,
  Avx2 = FD_TIER_AVX2,
  Avx512 = FD_TIER_AVX512,
  Neon = FD_TIER_NEON,
  NeonDot = FD_TIER_NEON_DOT
};

Simd simd_level();           // tier in use: the detected one, or forced by set_simd_level / FASTDISTILL_SIMD
Simd detected_simd_level();  // best tier this build and CPU support
const char* simd_name(Simd s);
std::vector<Simd> supported_simd_levels();  // tiers compiled into this build that this CPU runs, lowest first
// Forces a tier by name; throws std::invalid_argument for an unknown name or a tier this CPU or build lacks.
void set_simd_level(const std::string& name);
// CPU feature flags relevant to the kernels, in a fixed order (empty on architectures without queries here).
std::vector<std::pair<std::string, bool>> cpu_features();

// Element types the kernels understand. bfloat16 travels as uint16 bit patterns.
enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

inline int64_t dtype_size(DType d) { return d == DType::F32 ? 4 : 2; }

inline int clamp_threads(int nthreads) { return nthreads < 1 ? 1 : nthreads; }

// ---- per-tier leaf tables -------------------------------------------------------------------------------------
template <typename Table, Simd S>
const Table& tier_leaves();  // defined by each tier's translation unit (see above)

// Tier S runs tier From's table of Table (a family without kernels of its own at S). Inside namespace fd.
#define FD_ALIAS_TIER_LEAVES(Table, S, From) \
  template <>                                 \
  const Table& tier_leaves<Table, S>() {      \
    return tier_leaves<Table, From>();        \
  }

#define FD_DECLARE_ONE_TIER_LEAVES(Table, S) \
  template <>                                \
  const Table& tier_leaves<Table, S>();
#if FD_X86
#define FD_DECLARE_TIER_LEAVES(Table)                   \
  FD_DECLARE_ONE_TIER_LEAVES(Table, ::fd::Simd::Scalar) \
  FD_DECLARE_ONE_TIER_LEAVES(Table, ::fd::Simd::Avx2)   \
  FD_DECLARE_ONE_TIER_LEAVES(Table, ::fd::Simd::Avx512)
#elif FD_ARM64
#define FD_DECLARE_TIER_LEAVES(Table)                   \
  FD_DECLARE_ONE_TIER_LEAVES(Table, ::fd::Simd::Scalar) \
  FD_DECLARE_ONE_TIER_LEAVES(Table, ::fd::Simd::Neon)   \
  FD_DECLARE_ONE_TIER_LEAVES(Table, ::fd::Simd::NeonDot)
#else
#define FD_DECLARE_TIER_LEAVES(Table) FD_DECLARE_ONE_TIER_LEAVES(Table, ::fd::Simd::Scalar)
#endif

// The family's table for tier s (the tier in use by default).
template <typename Table>
const Table& leaves(Simd s = simd_level()) {
  switch (s) {
#if FD_X86
    case Simd::Avx512: return tier_leaves<Table, Simd::Avx512>();
    case Simd::Avx2: return tier_leaves<Table, Simd::Avx2>();
#elif FD_ARM64
    case Simd::NeonDot: return tier_leaves<Table, Simd::NeonDot>();
    case Simd::Neon: return tier_leaves<Table, Simd::Neon>();
#endif
    default: return tier_leaves<Table, Simd::Scalar>();
  }
}

}  // namespace fd
