// Wanda leaf kernel, avx2 tier (see wanda_kernels.h).
#include "cpu/wanda_isa.h"
#include "cpu/x86/tier_avx2.h"
#include "cpu/wanda_kernels.h"
