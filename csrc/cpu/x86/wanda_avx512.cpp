// Wanda leaf kernel, avx512 tier (see wanda_kernels.h).
#include "cpu/wanda_isa.h"
#include "cpu/x86/tier_avx512.h"
#include "cpu/wanda_kernels.h"
