// The tiled kernels of bfloat16 (implicit_gemm_kernels.cuh) and their entry points.
#define FULLCONV_IGEMM_DTYPE DType::kBFloat16
#define FULLCONV_IGEMM_NS igemm_bf16
#include "implicit_gemm_kernels.cuh"
