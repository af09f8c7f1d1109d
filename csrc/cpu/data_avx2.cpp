// Data-compression leaf kernels for the avx2 level (see data_kernels.h).
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "data_isa.h"
#pragma GCC target("avx2,fma,f16c,bmi2")
#include <immintrin.h>
#define FD_ISA_LEVEL 1
#define FD_ISA_NAMESPACE avx2
#include "data_kernels.h"
