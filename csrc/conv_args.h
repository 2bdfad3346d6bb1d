// Argument checking and ConvShape construction shared by every backend (CPU, CUDA).
// Defined in ops.cpp. Errors are raised with TORCH_CHECK_VALUE / TORCH_CHECK_TYPE so Python
// sees ValueError / TypeError with a message naming the problem.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <array>
#include <string>
#include <tuple>

#include "conv_shape.h"

namespace fullconv {

// Validates the arguments of full_conv (and, with bias = nullopt, of full_conv_backward)
// and returns the normalised problem shape. `input` may be batched (weight.dim() dims) or
// unbatched (weight.dim() - 1 dims).
ConvShape check_and_make_shape(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                               at::IntArrayRef dilation, int64_t groups, const char* op_name);

// Calls so far of a CPU blocked kernel or copy by name: tiles, bf16_tiles, rows, depthwise,
// depthwise_cl, grad_weight_tiles, gather (defined in cpu/full_conv_cpu.cpp; for tests: which
// kernel a problem took). An unknown name is a ValueError.
int64_t cpu_kernel_calls(const std::string& name);

// Checks of full_conv_backward's grad_output against the problem (shape, dtype, device).
void check_grad_output(const at::Tensor& grad_output, const at::Tensor& input,
                       const ConvShape& shape, bool batched);

// grad_bias = grad_output summed over batch and space (accumulated in float32 or wider).
at::Tensor grad_bias_from(const at::Tensor& grad_output, at::ScalarType dtype);

// t.to(dtype).contiguous(fmt), where a CPU tensor of 4 or 5 dims dense in NCHW or
// channels-last order changes between them, through register transposes
// (blocked::transpose_matrices; float32 or float64 on one side of the dtype change):
// ATen's permuted copies ran at 4-25 GB/s on the 2-core machine of benchmarks/NOTES.md,
// entry 40. FULLCONV_CPU_GATHER=aten keeps ATen's copy (to time both).
at::Tensor to_layout(const at::Tensor& t, at::ScalarType dtype, at::MemoryFormat fmt);

// grad_input computed batched and contiguous (possibly in a wider dtype) -> the input's
// shape, dtype and memory format.
at::Tensor finish_grad_input(const at::Tensor& gx, const at::Tensor& input, bool batched);

// Checks a residual to be added, zero-padded by `padding` per spatial dim on both sides, to a
// tensor of shape `out_shape` (same batch and channels, same dtype and device as `like`).
void check_residual(const at::Tensor& residual, at::IntArrayRef out_shape,
                    at::IntArrayRef padding, const at::Tensor& like, const char* op_name);

// A centred residual normalised like ConvShape (spatial dims last, unused leading dims 1):
// the output's and the residual's extents, the padding, and the number of (N*C) planes.
struct ResidualGeometry {
  int64_t out_size[kMaxSpatialDims] = {1, 1, 1};
  int64_t res_size[kMaxSpatialDims] = {1, 1, 1};
  int64_t pad[kMaxSpatialDims] = {0, 0, 0};
  int64_t planes = 0;
};
ResidualGeometry residual_geometry(at::IntArrayRef out_shape, const at::Tensor& residual,
                                   at::IntArrayRef padding);

// The region of `out` (batched or not) that a residual padded by `padding` covers.
at::Tensor residual_region(const at::Tensor& out, at::IntArrayRef padding);

// Shape of the output tensor (batched or not, as the input).
std::vector<int64_t> output_shape(const ConvShape& shape, bool batched);

// Memory format the output takes, following F.convNd: channels-last when the input or the
// weight suggests it.
at::MemoryFormat output_memory_format(const at::Tensor& input, const at::Tensor& weight);

// A kernel of one tap has no padding (d*(k-1) = 0 in every dim): its full convolution is an
// ordinary one, computed by ATen's convolution (oneDNN / cuDNN) and returned in the layout
// fullconv's kernels (and its fake kernel) give. `s` from check_and_make_shape.
at::Tensor one_tap_convolution(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, const ConvShape& s,
                               at::IntArrayRef stride, at::IntArrayRef dilation, int64_t groups);

// The backward of a one-tap kernel's full convolution by ATen's convolution_backward (cuDNN),
// with the outputs' layouts and dtypes of fullconv's own backward (grad_bias by grad_bias_from);
// outputs not in output_mask are empty.
std::tuple<at::Tensor, at::Tensor, at::Tensor> one_tap_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                                               const at::Tensor& weight, const ConvShape& s,
                                                               at::IntArrayRef stride, at::IntArrayRef dilation,
                                                               int64_t groups, std::array<bool, 3> output_mask);

// Zero padding times a non-finite weight is NaN in the padded reference. The kernels skip
// those products; this restores the reference's NaN on the outputs where a non-finite tap
// meets the implicit padding. Cheap (a scan of the weight) and a no-op for finite weights.
void apply_nonfinite_weight_padding(at::Tensor& output, const at::Tensor& weight,
                                    const ConvShape& shape);

// The same for grad_weight: a padded convolution's grad_weight multiplies grad_output by the
// padding zeros too, so a non-finite grad_output element makes NaN every tap of its output
// channel that meets padding there. Restores those NaN (CPU; a scan of grad_weight, and of
// grad_output where some output reads padding alone, when every value is finite).
void apply_nonfinite_grad_output_padding(at::Tensor& grad_weight, const at::Tensor& grad_output,
                                         const ConvShape& shape);

}  // namespace fullconv
