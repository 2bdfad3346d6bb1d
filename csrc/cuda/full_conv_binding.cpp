// Tensors -> CUDA launchers: device guard, current stream, dtype mapping, a launch-error check
// after every launch, and the CUDA registrations of both fullconv operators.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../conv_args.h"
#include "full_conv_cuda.h"

namespace fullconv {
namespace {

cuda::DType launcher_dtype(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return cuda::DType::kFloat64;
    case at::kFloat: return cuda::DType::kFloat32;
    case at::kHalf: return cuda::DType::kFloat16;
    case at::kBFloat16: return cuda::DType::kBFloat16;
    default: TORCH_CHECK_TYPE(false, "fullconv CUDA: unsupported dtype ", t);
  }
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "fullconv CUDA ", what, " kernel failed: ",
              cudaGetErrorString(err));
}

void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.is_cuda(), "fullconv CUDA kernel: ", name, " must be a CUDA tensor, got ",
                    t.device());
}

at::Tensor full_conv_cuda(const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                          at::IntArrayRef dilation, int64_t groups) {
  const auto s = check_and_make_shape(input, weight, bias, stride, dilation, groups, "full_conv");
  check_cuda(input, "input");
  check_cuda(weight, "weight");
  const c10::cuda::CUDAGuard guard(input.device());
  const bool batched = input.dim() == weight.dim();
  const auto x = (batched ? input : input.unsqueeze(0)).contiguous();
  const auto w = weight.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const auto b = has_bias ? bias->contiguous() : at::Tensor();
  // Per output channel: does any weight hold inf/nan? (device-side, no host sync)
  const auto nonfinite = w.isfinite().logical_not().flatten(1).any(1).to(at::kByte);
  auto y = at::empty(output_shape(s, true), x.options());
  check_launch(cuda::forward(launcher_dtype(x.scalar_type()), x.const_data_ptr(), w.const_data_ptr(),
                             has_bias ? b.const_data_ptr() : nullptr,
                             nonfinite.const_data_ptr<uint8_t>(), y.mutable_data_ptr(), s,
                             c10::cuda::getCurrentCUDAStream()),
               "forward");
  if (!batched) y = y.squeeze(0);
  return y.contiguous(output_memory_format(input, weight));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> full_conv_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask) {
  const auto s = check_and_make_shape(input, weight, std::nullopt, stride, dilation, groups,
                                      "full_conv_backward");
  const bool batched = input.dim() == weight.dim();
  check_grad_output(grad_output, input, s, batched);
  check_cuda(input, "input");
  const c10::cuda::CUDAGuard guard(input.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto dtype = launcher_dtype(input.scalar_type());
  const auto gy = (batched ? grad_output : grad_output.unsqueeze(0)).contiguous();
  at::Tensor grad_input = at::empty({0}, input.options());
  at::Tensor grad_weight = at::empty({0}, input.options());
  at::Tensor grad_bias = at::empty({0}, input.options());
  if (output_mask[2]) grad_bias = grad_bias_from(gy, input.scalar_type());
  if (output_mask[0]) {
    auto gx = at::empty({s.batch, s.in_channels, s.in_spatial()}, gy.options());
    check_launch(cuda::grad_input(dtype, gy.const_data_ptr(), weight.contiguous().const_data_ptr(),
                                  gx.mutable_data_ptr(), s, stream),
                 "grad_input");
    grad_input = finish_grad_input(gx, input, batched);
  }
  if (output_mask[1]) {
    const auto x = (batched ? input : input.unsqueeze(0)).contiguous();
    auto gw = at::empty(weight.sizes(), gy.options());
    check_launch(cuda::grad_weight(dtype, gy.const_data_ptr(), x.const_data_ptr(),
                                   gw.mutable_data_ptr(), s, stream),
                 "grad_weight");
    grad_weight = gw.contiguous(weight.suggest_memory_format());
  }
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace
}  // namespace fullconv

TORCH_LIBRARY_IMPL(fullconv, CUDA, m) {
  m.impl("full_conv", &fullconv::full_conv_cuda);
  m.impl("full_conv_backward", &fullconv::full_conv_backward_cuda);
}
