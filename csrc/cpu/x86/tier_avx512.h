// Tier header of the avx512 tier (see core.h): AVX-512 F/BW/VL/DQ (+ AVX2, FMA, F16C, BMI2), 512-bit vectors
// preferred, for every function defined after it in the translation unit. Include order as for tier_avx2.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core.h"

#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2,prefer-vector-width=512")
// GCC 12 warns spuriously inside its own AVX-512 intrinsic headers (masked intrinsics with undefined passthrough).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#define FD_TIER FD_TIER_AVX512
#define FD_TIER_NS avx512
#define FD_TIER_SIMD ::fd::Simd::Avx512
