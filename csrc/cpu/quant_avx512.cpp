// Quantization leaf kernels for the avx512 level (see quant_kernels.h).
#include <cstdint>

#include "common.h"
#include "quant_isa.h"
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2,prefer-vector-width=512")
#define FD_ISA_NAMESPACE avx512
#include "quant_kernels.h"
