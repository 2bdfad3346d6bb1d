// The tiled kernels of float32 on FMA tiles (implicit_gemm_kernels.cuh) and their entry points;
// float32 on TF32 tensor cores: implicit_gemm_tf32.cu.
#define FULLCONV_IGEMM_DTYPE DType::kFloat32
#define FULLCONV_IGEMM_TF32 0
#define FULLCONV_IGEMM_NS igemm_f32
#include "implicit_gemm_kernels.cuh"
