// The blocked forward tiles on bfloat16 operands, built for AVX-512F + AVX512_BF16 (vdpbf16ps:
// two bfloat16 products per lane into float32); see blocked_kernels_impl.h. Only
// forward_bf16 comes from this build, and it runs only on CPUs with AVX512_BF16. Compilers
// without the avx512bf16 target (GCC < 10, Clang < 9) build no bfloat16 tiles
// (blocked::bf16_available() is then false and bfloat16 runs on the float32 tiles).
#include "blocked_kernels.h"

#if FULLCONV_BLOCKED_BF16_BUILT
#define FULLCONV_BLOCKED_ISA avx512bf16
#define FULLCONV_TARGET __attribute__((target("avx512f,avx512bf16,avx2,fma")))
#define FULLCONV_BLOCKED_WIDTH 512
#define FULLCONV_BLOCKED_BF16 1
#include "blocked_kernels_impl.h"
#endif
