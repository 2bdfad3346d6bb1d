// The public functions of the tiled kernels (full_conv_cuda.h): the dtype-free ones, and those
// of a dtype, which call that dtype's unit (implicit_gemm_entry.h). Instantiates no kernel of
// the tiles' passes (FULLCONV_IGEMM_DTYPE unset), only the one tensor_core_kernels_built asks
// about.
#include "implicit_gemm_kernels.cuh"

namespace fullconv {
namespace cuda {

bool igemm_grid_fits(const ConvShape& s, GemmPass pass) {
  // the smallest block tiles (SIMT: 64 x 64) need the most blocks
  switch (pass) {
    case GemmPass::kForward: return image_grid_fits(forward_gemm(s), 64, 64);
    case GemmPass::kGradInput:
      for (int64_t cls = 0; cls < residue_classes(s); ++cls)
        if (!image_grid_fits(grad_input_gemm(s, cls), 64, 64)) return false;
      return true;
    case GemmPass::kGradWeight: return weight_grid_fits(s, 64, 64);
  }
  return false;
}

bool tensor_core_kernels_built() {
#ifdef FULLCONV_EMULATE
  return true;
#else
  // A build for an older architecture (TORCH_CUDA_ARCH_LIST=7.5+PTX, say) may run on a newer
  // GPU through its PTX, whose tensor-core kernels are stubs: ask what this GPU would run (every
  // unit is compiled for the same architectures).
  cudaFuncAttributes attr;
  const cudaError_t err = cudaFuncGetAttributes(&attr, image_gemm_kernel<__half, WmmaMath<__half, false, false>, false>);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear it: the direct kernels take over
    return false;
  }
  return attr.ptxVersion >= 80;
#endif
}

bool igemm_channels_last_ok(DType dtype, bool tf32, const ConvShape& s, GemmPass pass) {
  // the tensor-core operand tag of the dtype (float32 only with TF32)
  auto fits = [&](auto tag) {
    using Tag = typename decltype(tag)::type;
    if (pass == GemmPass::kGradWeight)  // (checked with the 64-row tiles: the most blocks)
      return weight_channels_last_fits<WmmaMath<Tag, false, false, 64>>(s);
    // reduction channels and columns are the same in every residue class of grad_input
    return channels_last_fits<WmmaMath<Tag, true, false>>(pass == GemmPass::kForward ? forward_gemm(s)
                                                                                    : grad_input_gemm(s, 0));
  };
  switch (dtype) {
    case DType::kFloat16: return fits(Type<__half>());
    case DType::kBFloat16: return fits(Type<__nv_bfloat16>());
    case DType::kFloat32: return tf32 && fits(Type<Tf32>());
    case DType::kFloat64: return false;
  }
  return false;
}

// Calls `name` of the unit of `dtype` (float32: of tf32) with the same arguments.
#define FULLCONV_IGEMM_BY_DTYPE(dtype, tf32, name, ...)                                               \
  switch (dtype) {                                                                                    \
    case DType::kFloat64: return igemm_f64::name(__VA_ARGS__);                                        \
    case DType::kFloat32: return (tf32) ? igemm_tf32::name(__VA_ARGS__) : igemm_f32::name(__VA_ARGS__); \
    case DType::kFloat16: return igemm_f16::name(__VA_ARGS__);                                        \
    case DType::kBFloat16: return igemm_bf16::name(__VA_ARGS__);                                      \
  }

cudaError_t prepare_weight(DType dtype, const void* w, const ConvShape& s, GemmPass pass, void* packed,
                           unsigned char* nonfinite_weight, cudaStream_t stream) {
  FULLCONV_IGEMM_BY_DTYPE(dtype, false, prepare_weight, dtype, w, s, pass, packed, nonfinite_weight, stream)
  return cudaErrorInvalidValue;
}

cudaError_t forward_igemm(DType dtype, bool tf32, IgemmLayout layout, const void* x, const void* packed,
                          const void* w, const void* bias, const unsigned char* nonfinite_weight,
                          const Epilogue& epilogue, void* y, const ConvShape& s, cudaStream_t stream) {
  FULLCONV_IGEMM_BY_DTYPE(dtype, tf32, forward_igemm, dtype, tf32, layout, x, packed, w, bias, nonfinite_weight,
                          epilogue, y, s, stream)
  return cudaErrorInvalidValue;
}

cudaError_t grad_input_igemm(DType dtype, bool tf32, IgemmLayout layout, const void* grad_out, const void* packed,
                             void* grad_in, const ConvShape& s, cudaStream_t stream) {
  FULLCONV_IGEMM_BY_DTYPE(dtype, tf32, grad_input_igemm, dtype, tf32, layout, grad_out, packed, grad_in, s, stream)
  return cudaErrorInvalidValue;
}

size_t grad_weight_igemm_workspace(DType dtype, bool tf32, Tiles tiles, const ConvShape& s, int sm_count) {
  FULLCONV_IGEMM_BY_DTYPE(dtype, tf32, grad_weight_igemm_workspace, dtype, tf32, tiles, s, sm_count)
  return 0;
}

cudaError_t grad_weight_igemm(DType dtype, bool tf32, bool channels_last, Tiles tiles, const void* grad_out,
                              const void* x, void* grad_w, void* workspace, const ConvShape& s, int sm_count,
                              cudaStream_t stream) {
  FULLCONV_IGEMM_BY_DTYPE(dtype, tf32, grad_weight_igemm, dtype, tf32, channels_last, tiles, grad_out, x, grad_w,
                          workspace, s, sm_count, stream)
  return cudaErrorInvalidValue;
}

#undef FULLCONV_IGEMM_BY_DTYPE

}  // namespace cuda
}  // namespace fullconv
