// int8 GEMM leaf kernels, neon_dot tier: sdot (see int8_kernels.h). Chosen only where the CPU reports HWCAP_ASIMDDP.
#include "cpu/int8_isa.h"
#include "cpu/arm/tier_neon_dot.h"
#include "cpu/int8_kernels.h"
