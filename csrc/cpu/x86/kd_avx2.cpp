// KD leaf kernels, avx2 tier (see kd_kernels.h).
#include "cpu/kd_isa.h"
#include "cpu/x86/tier_avx2.h"
#include "cpu/kd_kernels.h"
