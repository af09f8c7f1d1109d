// Quantization leaf kernels for the avx2 level (see quant_kernels.h).
#include <cstdint>

#include "common.h"
#include "quant_isa.h"
#pragma GCC target("avx2,fma,f16c,bmi2")
#define FD_ISA_NAMESPACE avx2
#include "quant_kernels.h"
