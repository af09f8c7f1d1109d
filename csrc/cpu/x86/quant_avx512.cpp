// Quant leaf kernels, avx512 tier (see quant_kernels.h).
#include "cpu/quant_isa.h"
#include "cpu/x86/tier_avx512.h"
#include "cpu/quant_kernels.h"
