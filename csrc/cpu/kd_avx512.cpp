// Knowledge-distillation row kernels for the avx512 level (see kd_kernels.h).
#include <cstdint>
#include <cstring>

#include "common.h"
#include "kd_isa.h"
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2,prefer-vector-width=512")
#define FD_ISA_NAMESPACE avx512
#include "kd_kernels.h"
