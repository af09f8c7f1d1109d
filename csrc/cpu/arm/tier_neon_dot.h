// Tier header of the neon_dot tier (see core.h): Advanced SIMD plus the ARMv8.2 dot product (sdot, FEAT_DotProd;
// HWCAP_ASIMDDP) for every function defined after it in the translation unit. Only the int8 GEMM has a unit of its
// own at this tier (arm/int8_neon_dot.cpp); the other families reuse their neon leaves (tier_neon.h). Include order
// as for tier_neon.h: headers read before the target switch keep their inline functions baseline aarch64.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core.h"

#pragma GCC target("arch=armv8.2-a+dotprod")
#include <arm_neon.h>

#define FD_TIER FD_TIER_NEON_DOT
#define FD_TIER_NS neon_dot
#define FD_TIER_SIMD ::fd::Simd::NeonDot
