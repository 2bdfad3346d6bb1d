// Launchers of the CUDA full-convolution kernels. Torch-free: raw device pointers, the shared
// ConvShape, a stream. Tensors are batched and contiguous (N, C, *spatial); the binding
// (full_conv_binding.cpp) guarantees that. Every launcher returns the launch's cudaError_t.
#pragma once

#include <cuda_runtime_api.h>

#include "../conv_shape.h"

namespace fullconv {
namespace cuda {

enum class DType { kFloat64, kFloat32, kFloat16, kBFloat16 };

// The direct kernels' forward and grad_input: register-blocked (the default; kernels too
// large for their shared-memory tables fall back to one thread per element), or one thread per
// element everywhere (FULLCONV_CUDA_DIRECT=element, to time the two side by side).
enum class DirectKernels { kBlocked, kPerElement };

// y = full_conv(x, w) + bias (bias may be null). Products accumulate in float32 (float64 for
// float64); no atomics, so results are deterministic. nonfinite_weight flags the output
// channels whose weights hold inf/nan: their products with the implicit padding are then taken
// into account (0 * inf = nan, as in the padded reference). It may be null only where every
// weight is finite (else which padding products reach the output depends on the kernel).
cudaError_t forward(DType dtype, const void* x, const void* w, const void* bias,
                    const unsigned char* nonfinite_weight, void* y, const ConvShape& s,
                    cudaStream_t stream);

// Fused residual epilogue of the forward: the residual (N, Cout, res_size...) is added to the
// output centred (offset `pad` in each spatial dim, zero outside), then ReLU if relu.
struct Epilogue {
  const void* residual = nullptr;
  int64_t res_size[kMaxSpatialDims] = {1, 1, 1};  // normalised like ConvShape
  int64_t pad[kMaxSpatialDims] = {0, 0, 0};
  bool relu = false;
};

cudaError_t forward_epilogue(DType dtype, const void* x, const void* w, const void* bias,
                             const unsigned char* nonfinite_weight, const Epilogue& epilogue,
                             void* y, const ConvShape& s, cudaStream_t stream,
                             DirectKernels kernels = DirectKernels::kBlocked);

// out = input + centred residual (+ ReLU) over `planes` planes of out_size (normalised dims).
cudaError_t padded_add(DType dtype, const void* input, const Epilogue& epilogue, void* out,
                       int64_t planes, const int64_t out_size[kMaxSpatialDims],
                       cudaStream_t stream);

// gx = grad of full_conv w.r.t. its input (every element written).
cudaError_t grad_input(DType dtype, const void* grad_out, const void* w, void* grad_in,
                       const ConvShape& s, cudaStream_t stream, DirectKernels kernels = DirectKernels::kBlocked);

// gw = grad of full_conv w.r.t. its weight (every element written; fixed-order block reduction).
cudaError_t grad_weight(DType dtype, const void* grad_out, const void* x, void* grad_w,
                        const ConvShape& s, cudaStream_t stream);

// Whether the direct forward (forward_epilogue, DirectKernels::kBlocked) runs its
// register-blocked kernel on this problem (else one thread per output element).
bool forward_blocked_takes(DType dtype, const ConvShape& s);

// grad_weight, register-blocked for layers of at most 4 input channels per group (RGB stems):
// slices of the reduction write partial sums to a workspace of grad_weight_blocked_workspace()
// bytes, added in a fixed order (deterministic). That size is 0 where the kernel does not take
// the problem (more than 4 input or fewer than 16 output channels per group, a kernel whose x
// tile exceeds its shared memory, an empty batch); sm_count (the device's multiprocessors) sizes the slices, and must be the same in
// both calls.
size_t grad_weight_blocked_workspace(DType dtype, const ConvShape& s, int sm_count);
cudaError_t grad_weight_blocked(DType dtype, const void* grad_out, const void* x, void* grad_w, void* workspace,
                                const ConvShape& s, int sm_count, cudaStream_t stream);

// ---- Tiled implicit-GEMM kernels (implicit_gemm_kernels.cuh, built per dtype; index math in
// implicit_gemm.h).
// Tensor cores (WMMA, sm_80 and newer only: the caller checks) for float16/bfloat16, and for
// float32 when tf32 is true; FMA tiles for float32 (tf32 false) and float64. `packed` is the
// weight rearranged as [groups][taps][reduction channels][columns]: forward
// (g, tap, ci, co_in_group), grad_input (g, tap, co_in_group, ci).

enum class GemmPass { kForward, kGradInput, kGradWeight };

// One pass over the weight (Cout, Cin/g, *kernel): packs it as the tiled kernels' B operand
// for `pass` (kForward or kGradInput; packed may be null: no packing) and, when
// nonfinite_weight is not null, flags each output channel holding an inf/nan weight
// (one block per output channel, no atomics).
cudaError_t prepare_weight(DType dtype, const void* w, const ConvShape& s, GemmPass pass, void* packed,
                           unsigned char* nonfinite_weight, cudaStream_t stream);

// False when a pass's block grid exceeds CUDA's limits, or (forward, grad_input) its kernel
// has more than 64 taps along a dim (then use the direct kernels).
bool igemm_grid_fits(const ConvShape& s, GemmPass pass);

// Whether the tensor-core kernels this GPU would run were compiled for sm_80 or newer (false
// for a PTX-only build of an older architecture running on a newer GPU).
bool tensor_core_kernels_built();

// Whether a pass can read its operands from channels-last copies (N, *spatial, C) with 16-byte
// asynchronous copies (forward: x, grad_input: grad_out, grad_weight: grad_out and x):
// tensor-core dtypes (float32 with tf32 only), the channels of the GEMM's reduction and
// columns (grad_weight: output and input channels) per group in whole 16-byte vectors, and
// for forward / grad_input enough channels per tap. The copies' data pointers must be 16-byte
// aligned.
bool igemm_channels_last_ok(DType dtype, bool tf32, const ConvShape& s, GemmPass pass);

// Layouts of the source and destination of a tiled forward (x, y) or grad_input (grad_out,
// grad_in) pass: (N, C, *spatial), or channels-last (N, *spatial, C). A channels-last source
// runs the cp.async kernels (igemm_channels_last_ok must hold); a channels-last destination
// is only written by them (it needs a channels-last source). A residual stays (N, C, *spatial).
// row_regions: the forward's rows run border regions apart from the interior (implicit_gemm.h),
// so tiles of border rows skip the taps that meet only padding (channels-last reads and FMA
// tiles; the tensor-core gather keeps the plain order, see ForwardOp); false keeps the plain
// order everywhere (for side-by-side measurement; grad_input ignores it).
// tiles: which tiles run the tiled kernels (the other dtypes and passes ignore each value):
// kBase: WMMA tiles (128 x 64, three stages) for float16/bfloat16 channels-last kernels, FMA
// tiles of 64 x 64 for float32/float64; kMma: the float16/bfloat16 channels-last kernels on
// mma.sync tiles (ldmatrix from swizzled shared memory, a ring of four stages; 128 x 128 where
// a pass has more than 64 columns, else 128 x 64); kMmaNarrow: the same with at most 64
// columns; kMmaWide: 256-row mma.sync tiles (256 x 128 where a pass has more than 64 columns,
// 64 x 64 per warp, else 256 x 64; those of kMma on a device that cannot give a block the
// ~141 KiB of shared memory of the first), for grad_weight where a group has at least 256
// output channels (its rows), else as kMma;
// kSimtWide: the float32 (no TF32) forward and grad_input (gather kernels) on FMA
// tiles of 128 x 64 read as 16-byte vectors; kWgmma: the float16/bfloat16 channels-last
// forward and grad_input on Hopper's wgmma (128 x 128 tiles of two warpgroups, 64-deep chunks,
// four stages) where a pass has more than 64 columns, else and for grad_weight as kMma; only
// for a device of compute capability 9.0 and a build with sm_90a code (wgmma_kernels_built;
// the binding gives kMma instead elsewhere, where the instructions would trap); kWgmmaWide:
// as kWgmma with 128 x 256 tiles (two m64n128 products per warpgroup and 16-deep slice, 128
// accumulators a thread, ~201 KiB of shared memory) where a pass has more than 128 columns.
// The binding resolves its per-problem choice (FULLCONV_CUDA_TILES=auto) to one of these
// before a launch.
enum class Tiles { kBase, kMma, kMmaNarrow, kMmaWide, kSimtWide, kWgmma, kWgmmaWide };
inline constexpr bool is_wgmma(Tiles t) { return t == Tiles::kWgmma || t == Tiles::kWgmmaWide; }

// Whether this build holds sm_90a code (TORCH_CUDA_ARCH_LIST with 9.0a: setup.py defines
// FULLCONV_SM90A_BUILT for every unit), which the kWgmma tiles need on a 9.0 device.
inline constexpr bool wgmma_kernels_built() {
#if defined(FULLCONV_EMULATE) || (defined(FULLCONV_SM90A_BUILT) && FULLCONV_SM90A_BUILT)
  return true;
#else
  return false;
#endif
}
struct IgemmLayout {
  bool src_channels_last = false;
  bool dst_channels_last = false;
  bool row_regions = true;
  Tiles tiles = Tiles::kBase;
};

// As forward_epilogue; w is the unpacked weight (read only for non-finite-weight channels).
cudaError_t forward_igemm(DType dtype, bool tf32, IgemmLayout layout, const void* x, const void* packed,
                          const void* w, const void* bias, const unsigned char* nonfinite_weight,
                          const Epilogue& epilogue, void* y, const ConvShape& s, cudaStream_t stream);

cudaError_t grad_input_igemm(DType dtype, bool tf32, IgemmLayout layout, const void* grad_out, const void* packed,
                             void* grad_in, const ConvShape& s, cudaStream_t stream);

// grad_weight with split-K over the reduction; the slices' partial sums need a workspace of
// grad_weight_igemm_workspace() bytes (0: none), summed in a fixed order (deterministic).
// sm_count (the device's multiprocessors) sizes the split.
// channels_last: grad_out and x are (N, *spatial, C) copies (igemm_channels_last_ok for
// kGradWeight: output and input channels per group in whole 16-byte vectors); the workspace
// is the same either way. tiles (as IgemmLayout::tiles; channels-last only) changes the tiles,
// so the workspace must be asked with the same value.
size_t grad_weight_igemm_workspace(DType dtype, bool tf32, Tiles tiles, const ConvShape& s, int sm_count);
cudaError_t grad_weight_igemm(DType dtype, bool tf32, bool channels_last, Tiles tiles, const void* grad_out,
                              const void* x, void* grad_w, void* workspace, const ConvShape& s, int sm_count,
                              cudaStream_t stream);

}  // namespace cuda
}  // namespace fullconv
