// Tier header of the avx2 tier (see core.h): AVX2, FMA, F16C and BMI2 for every function defined after it in the
// translation unit. A tier file includes its family's _isa.h, then this, then the family's _kernels.h: headers read
// before the target switch keep their inline functions baseline x86-64 (the linker keeps one copy of each, and it
// must run on every CPU).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core.h"

#pragma GCC target("avx2,fma,f16c,bmi2")
#include <immintrin.h>

#define FD_TIER FD_TIER_AVX2
#define FD_TIER_NS avx2
#define FD_TIER_SIMD ::fd::Simd::Avx2
