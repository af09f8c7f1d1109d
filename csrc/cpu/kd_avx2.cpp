// Knowledge-distillation row kernels for the avx2 level (see kd_kernels.h).
#include <cstdint>
#include <cstring>

#include "common.h"
#include "kd_isa.h"
#pragma GCC target("avx2,fma,f16c,bmi2")
#define FD_ISA_NAMESPACE avx2
#include "kd_kernels.h"
