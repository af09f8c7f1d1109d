// KD leaf kernels, avx512 tier (see kd_kernels.h).
#include "cpu/kd_isa.h"
#include "cpu/x86/tier_avx512.h"
#include "cpu/kd_kernels.h"
