// Tier header of the scalar tier (see core.h): portable C++, built on every architecture. A tier file includes its
// family's _isa.h, then this, then the family's _kernels.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core.h"

#define FD_TIER FD_TIER_SCALAR
#define FD_TIER_NS scalar
#define FD_TIER_SIMD ::fd::Simd::Scalar
