// Data-compression leaf kernels for the avx512 level (see data_kernels.h).
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "data_isa.h"
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2,prefer-vector-width=512")
// GCC 12 warns spuriously inside its own AVX-512 intrinsic headers (masked intrinsics with undefined passthrough).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define FD_ISA_LEVEL 2
#define FD_ISA_NAMESPACE avx512
#include "data_kernels.h"
