// int8 GEMM leaf kernels, scalar tier (see int8_kernels.h).
#include "cpu/int8_isa.h"
#include "cpu/tier_scalar.h"
#include "cpu/int8_kernels.h"
