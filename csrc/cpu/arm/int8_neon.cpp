// int8 GEMM leaf kernels, neon tier: smull/sadalp (see int8_kernels.h).
#include "cpu/int8_isa.h"
#include "cpu/arm/tier_neon.h"
#include "cpu/int8_kernels.h"
