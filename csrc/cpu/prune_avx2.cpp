// Pruning leaf kernels for the avx2 level (see prune_kernels.h).
#include <cstdint>
#include <cstring>

#include "common.h"
#include "prune_isa.h"
#pragma GCC target("avx2,fma,f16c,bmi2")
#define FD_ISA_AVX512 0
#define FD_ISA_NAMESPACE avx2
#include "prune_kernels.h"
