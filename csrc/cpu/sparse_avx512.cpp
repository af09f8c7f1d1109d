// Sparse matmul leaf kernels for the avx512 level (see sparse_kernels.h).
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common.h"
#include "sparse_isa.h"
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2,prefer-vector-width=512")
// GCC 12 warns spuriously inside its own AVX-512 intrinsic headers (masked intrinsics with undefined passthrough).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define FD_ISA_AVX512 1
#define FD_ISA_AVX2 0
#define FD_ISA_NAMESPACE avx512
#include "sparse_kernels.h"
