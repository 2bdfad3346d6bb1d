// The tiled kernels of float64 (implicit_gemm_kernels.cuh) and their entry points.
#define FULLCONV_IGEMM_DTYPE DType::kFloat64
#define FULLCONV_IGEMM_NS igemm_f64
#include "implicit_gemm_kernels.cuh"
