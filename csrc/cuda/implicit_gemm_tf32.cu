// The tiled kernels of float32 on TF32 tensor cores (implicit_gemm_kernels.cuh) and their entry
// points.
#define FULLCONV_IGEMM_DTYPE DType::kFloat32
#define FULLCONV_IGEMM_TF32 1
#define FULLCONV_IGEMM_NS igemm_tf32
#include "implicit_gemm_kernels.cuh"
