// The tiled kernels of float16 (implicit_gemm_kernels.cuh) and their entry points.
#define FULLCONV_IGEMM_DTYPE DType::kFloat16
#define FULLCONV_IGEMM_NS igemm_f16
#include "implicit_gemm_kernels.cuh"
