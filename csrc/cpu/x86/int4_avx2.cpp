// int4 linear leaf kernels, avx2 tier (see int4_kernels.h).
#include "cpu/int4_isa.h"
#include "cpu/x86/tier_avx2.h"
#include "cpu/int4_kernels.h"
