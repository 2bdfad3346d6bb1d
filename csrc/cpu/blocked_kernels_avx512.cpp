// The blocked kernels built for AVX-512F (512-bit vectors: tiles of twice the channels, half
// the instructions per product of the AVX2 build); see blocked_kernels_impl.h.
#define FULLCONV_BLOCKED_ISA avx512
#define FULLCONV_TARGET __attribute__((target("avx512f,avx2,fma")))
#define FULLCONV_BLOCKED_WIDTH 512
#include "blocked_kernels_impl.h"
