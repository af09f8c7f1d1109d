// Data-compression leaf kernels, avx512 tier (see data_kernels.h).
#include "cpu/data_isa.h"
#include "cpu/x86/tier_avx512.h"
#include "cpu/data_kernels.h"
