// int4 linear leaf kernels, avx512 tier: W4A8 on VNNI (see int4_kernels.h); an AVX-512 CPU without VNNI runs the
// avx2 leaves (int4_leaves in int4.cpp).
#include "cpu/int4_isa.h"
#include "cpu/x86/tier_avx512.h"
#pragma GCC target("avx512vnni")
// GCC 12 warns spuriously inside its own AVX-512 headers (unpack/permute intrinsics with undefined passthrough).
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "cpu/int4_kernels.h"
