// Tier header of the neon tier (see core.h): Advanced SIMD, which every aarch64 core has (the baseline ISA), so no
// target switch; only what arm_neon.h adds to the scalar tier. A tier file includes its family's _isa.h, then this,
// then the family's _kernels.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core.h"

#include <arm_neon.h>

#define FD_TIER FD_TIER_NEON
#define FD_TIER_NS neon
#define FD_TIER_SIMD ::fd::Simd::Neon

// The families whose kernels have nothing that the dot product changes run their neon leaves at neon_dot too
// (one compiled copy): a neon tier file ends with FD_NEON_LEAVES_AT_NEON_DOT(Table).
#define FD_NEON_LEAVES_AT_NEON_DOT(Table)                          \
  namespace fd {                                                   \
  FD_ALIAS_TIER_LEAVES(Table, Simd::NeonDot, Simd::Neon)           \
  }
