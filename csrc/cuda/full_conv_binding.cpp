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

// The residual's normalised extent and centring for the launchers.
cuda::Epilogue make_epilogue(const at::Tensor* residual, at::IntArrayRef out_shape,
                             at::IntArrayRef padding, bool relu) {
  cuda::Epilogue ep;
  ep.relu = relu;
  if (residual != nullptr) {
    ep.residual = residual->const_data_ptr();
    const auto geo = residual_geometry(out_shape, *residual, padding);
    for (int i = 0; i < kMaxSpatialDims; ++i) {
      ep.res_size[i] = geo.res_size[i];
      ep.pad[i] = geo.pad[i];
    }
  }
  return ep;
}

at::Tensor full_conv_cuda_impl(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, const at::Tensor* residual,
                               at::IntArrayRef stride, at::IntArrayRef dilation, int64_t groups,
                               at::IntArrayRef residual_padding, bool relu, const char* op_name) {
  const auto s = check_and_make_shape(input, weight, bias, stride, dilation, groups, op_name);
  check_cuda(input, "input");
  check_cuda(weight, "weight");
  const c10::cuda::CUDAGuard guard(input.device());
  const bool batched = input.dim() == weight.dim();
  at::Tensor res;
  if (residual != nullptr) {
    check_residual(*residual, output_shape(s, batched), residual_padding, input, op_name);
    res = (batched ? *residual : residual->unsqueeze(0)).contiguous();
  }
  const auto x = (batched ? input : input.unsqueeze(0)).contiguous();
  const auto w = weight.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const auto b = has_bias ? bias->contiguous() : at::Tensor();
  // Per output channel: does any weight hold inf/nan? (device-side, no host sync)
  const auto nonfinite = w.isfinite().logical_not().flatten(1).any(1).to(at::kByte);
  auto y = at::empty(output_shape(s, true), x.options());
  check_launch(cuda::forward_epilogue(launcher_dtype(x.scalar_type()), x.const_data_ptr(),
                                      w.const_data_ptr(), has_bias ? b.const_data_ptr() : nullptr,
                                      nonfinite.const_data_ptr<uint8_t>(),
                                      make_epilogue(residual ? &res : nullptr, y.sizes(), residual_padding, relu),
                                      y.mutable_data_ptr(), s, c10::cuda::getCurrentCUDAStream()),
               "forward");
  if (!batched) y = y.squeeze(0);
  return y.contiguous(output_memory_format(input, weight));
}

at::Tensor full_conv_cuda(const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                          at::IntArrayRef dilation, int64_t groups) {
  return full_conv_cuda_impl(input, weight, bias, nullptr, stride, dilation, groups, {}, false,
                             "full_conv");
}

at::Tensor full_conv_residual_cuda(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, const at::Tensor& residual,
                                   at::IntArrayRef stride, at::IntArrayRef dilation, int64_t groups,
                                   at::IntArrayRef residual_padding, bool relu) {
  return full_conv_cuda_impl(input, weight, bias, &residual, stride, dilation, groups,
                             residual_padding, relu, "full_conv_residual");
}

at::Tensor padded_add_cuda(const at::Tensor& input, const at::Tensor& residual,
                           at::IntArrayRef residual_padding, bool relu) {
  check_residual(residual, input.sizes(), residual_padding, input, "padded_add");
  check_cuda(input, "input");
  const c10::cuda::CUDAGuard guard(input.device());
  const auto x = input.contiguous();
  const auto r = residual.contiguous();
  auto out = at::empty_like(x, at::MemoryFormat::Contiguous);
  const auto geo = residual_geometry(x.sizes(), r, residual_padding);
  check_launch(cuda::padded_add(launcher_dtype(x.scalar_type()), x.const_data_ptr(),
                                make_epilogue(&r, x.sizes(), residual_padding, relu), out.mutable_data_ptr(),
                                geo.planes, geo.out_size, c10::cuda::getCurrentCUDAStream()),
               "padded_add");
  return out.contiguous(input.suggest_memory_format());
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
  m.impl("full_conv_residual", &fullconv::full_conv_residual_cuda);
  m.impl("padded_add", &fullconv::padded_add_cuda);
}
