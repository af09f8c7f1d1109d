// Data-compression leaf kernels, avx2 tier (see data_kernels.h).
#include "cpu/data_isa.h"
#include "cpu/x86/tier_avx2.h"
#include "cpu/data_kernels.h"
