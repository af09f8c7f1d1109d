// int8 GEMM leaf kernels, avx512 tier: VNNI (see int8_kernels.h). Chosen only where the CPU has AVX512-VNNI
// (int8_leaves in int8.cpp).
#include "cpu/int8_isa.h"
#include "cpu/x86/tier_avx512.h"
#pragma GCC target("avx512vnni")
#include "cpu/int8_kernels.h"
