// Entry points of the tiled kernels of one dtype: implicit_gemm_kernels.cuh is compiled once
// per dtype (implicit_gemm_f64.cu, _f32 (FMA tiles), _tf32 (float32 on TF32 tensor cores),
// _f16, _bf16), each unit defining these in its own namespace; implicit_gemm_dispatch.cu
// defines the public functions of full_conv_cuda.h, which call the namespace of the dtype (and
// TF32 flag) they are given. Same signatures as there; a unit given another dtype returns
// cudaErrorInvalidValue (its workspace query 0).
#pragma once

#include "full_conv_cuda.h"

#define FULLCONV_IGEMM_DECLARE_ENTRY_POINTS(ns)                                                                 \
  namespace ns {                                                                                                \
  cudaError_t prepare_weight(DType dtype, const void* w, const ConvShape& s, GemmPass pass, void* packed,       \
                             unsigned char* nonfinite_weight, cudaStream_t stream);                             \
  cudaError_t forward_igemm(DType dtype, bool tf32, IgemmLayout layout, const void* x, const void* packed,      \
                            const void* w, const void* bias, const unsigned char* nonfinite_weight,             \
                            const Epilogue& epilogue, void* y, const ConvShape& s, cudaStream_t stream);         \
  cudaError_t grad_input_igemm(DType dtype, bool tf32, IgemmLayout layout, const void* grad_out,                \
                               const void* packed, void* grad_in, const ConvShape& s, cudaStream_t stream);     \
  size_t grad_weight_igemm_workspace(DType dtype, bool tf32, Tiles tiles, const ConvShape& s, int sm_count);    \
  cudaError_t grad_weight_igemm(DType dtype, bool tf32, bool channels_last, Tiles tiles, const void* grad_out,  \
                                const void* x, void* grad_w, void* workspace, const ConvShape& s, int sm_count, \
                                cudaStream_t stream);                                                           \
  }

namespace fullconv {
namespace cuda {
FULLCONV_IGEMM_DECLARE_ENTRY_POINTS(igemm_f64)
FULLCONV_IGEMM_DECLARE_ENTRY_POINTS(igemm_f32)
FULLCONV_IGEMM_DECLARE_ENTRY_POINTS(igemm_tf32)
FULLCONV_IGEMM_DECLARE_ENTRY_POINTS(igemm_f16)
FULLCONV_IGEMM_DECLARE_ENTRY_POINTS(igemm_bf16)
}  // namespace cuda
}  // namespace fullconv
