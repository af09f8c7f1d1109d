// Quant leaf kernels, avx2 tier (see quant_kernels.h).
#include "cpu/quant_isa.h"
#include "cpu/x86/tier_avx2.h"
#include "cpu/quant_kernels.h"
