// int8 GEMM leaf kernels for the avx2 level (see int8_kernels.h).
#include <cmath>
#include <cstdint>

#include "common.h"
#include "int8_isa.h"
#pragma GCC target("avx2,fma,f16c,bmi2")
#include <immintrin.h>
#define FD_ISA_LEVEL 1
#define FD_ISA_NAMESPACE avx2
#include "int8_kernels.h"
