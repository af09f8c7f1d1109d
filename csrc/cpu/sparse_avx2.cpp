// Sparse matmul leaf kernels for the avx2 level (see sparse_kernels.h).
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common.h"
#include "sparse_isa.h"
#pragma GCC target("avx2,fma,f16c,bmi2")
#include <immintrin.h>
#define FD_ISA_AVX512 0
#define FD_ISA_AVX2 1
#define FD_ISA_NAMESPACE avx2
#include "sparse_kernels.h"
