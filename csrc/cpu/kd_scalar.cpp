// Knowledge-distillation row kernels for the scalar level (see kd_kernels.h).
#include <cstdint>
#include <cstring>

#include "common.h"
#include "kd_isa.h"
#define FD_ISA_NAMESPACE scalar
#include "kd_kernels.h"
