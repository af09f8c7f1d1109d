// int8 GEMM leaf kernels, avx2 tier (see int8_kernels.h).
#include "cpu/int8_isa.h"
#include "cpu/x86/tier_avx2.h"
#include "cpu/int8_kernels.h"
