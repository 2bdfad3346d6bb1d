// The blocked kernels built for AVX2 + FMA (256-bit vectors); see blocked_kernels_impl.h.
#define FULLCONV_BLOCKED_ISA avx2
#define FULLCONV_TARGET __attribute__((target("avx2,fma")))
#define FULLCONV_BLOCKED_WIDTH 256
#include "blocked_kernels_impl.h"
