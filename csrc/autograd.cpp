// Reverse-mode autograd of the fullconv operators (full_conv, full_conv_residual, padded_add)
// in C++.
//
// A Python autograd formula (torch.library.register_autograd) costs tens of microseconds of
// interpreter time per call, forward and backward, which is the whole kernel time of a small
// layer and leaves a GPU idle between short kernels. Here the forward saves its inputs and
// the backward calls fullconv::full_conv_backward once for the gradients it is asked for
// (and, for the fused residual epilogue, passes the gradient's centre on to the residual).
//
// Double backward: when the backward itself is recorded (create_graph=True), the backward
// operator goes through its own autograd formula (registered in Python, fullconv/ops.py);
// otherwise it is called below autograd, with no formula to run.
// torch.func transforms take the autograd.Functions of fullconv/ops.py, which call the same
// operators; forward-mode AD duals are unpacked by the functional API before the operator.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>

#include "conv_args.h"

namespace fullconv {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using FullConvSig = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                               at::IntArrayRef, at::IntArrayRef, int64_t);
using ResidualSig = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                               const at::Tensor&, at::IntArrayRef, at::IntArrayRef, int64_t, at::IntArrayRef,
                               bool);
using PaddedAddSig = at::Tensor(const at::Tensor&, const at::Tensor&, at::IntArrayRef, bool);
using BackwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                   const at::Tensor&, at::IntArrayRef,
                                                                   at::IntArrayRef, int64_t, std::array<bool, 3>);

template <typename Sig>
c10::TypedOperatorHandle<Sig> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

void save_conv_args(AutogradContext* ctx, const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                    at::IntArrayRef dilation, int64_t groups) {
  ctx->saved_data["stride"] = stride.vec();
  ctx->saved_data["dilation"] = dilation.vec();
  ctx->saved_data["groups"] = groups;
  ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
}

// Whether t is a dual tensor of the (single) open forward-AD level.
bool carries_tangent(const at::Tensor& t) { return t.defined() && t._fw_grad(/*level=*/0).defined(); }

// grad_input, grad_weight, grad_bias of full_conv(input, weight, bias) for grad_output, those
// of the tensor inputs 0, 1 (and 2, bias, when there is one) that need one; undefined otherwise.
std::array<at::Tensor, 3> conv_gradients(AutogradContext* ctx, const at::Tensor& grad_output,
                                         const at::Tensor& input, const at::Tensor& weight) {
  const auto stride = ctx->saved_data["stride"].toIntVector();
  const auto dilation = ctx->saved_data["dilation"].toIntVector();
  const int64_t groups = ctx->saved_data["groups"].toInt();
  // needs_input_grad counts the tensor inputs only: bias is the third when there is one
  const bool has_bias = ctx->saved_data["has_bias"].toBool();
  const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                    has_bias && ctx->needs_input_grad(2)};
  std::array<at::Tensor, 3> grads;
  if (!(mask[0] || mask[1] || mask[2])) return grads;
  static const auto backward_op = find_op<BackwardSig>("fullconv::full_conv_backward");
  auto call = [&] {
    return backward_op.call(grad_output, input, weight, stride, dilation, groups, mask);
  };
  std::tuple<at::Tensor, at::Tensor, at::Tensor> out;
  if (carries_tangent(grad_output) || carries_tangent(input) || carries_tangent(weight)) {
    // a forward taken outside a dual level, its gradient inside one (forward-over-reverse):
    // full_conv_backward's formula is reverse-mode only, so the backward runs through the
    // Python Function with a jvp (fullconv/ops.py registers this operator at import)
    const auto dual = c10::Dispatcher::singleton().findSchema({"fullconv::_full_conv_backward_dual", ""});
    TORCH_CHECK(dual.has_value(), "fullconv: forward-mode AD through full_conv's backward needs the fullconv "
                                  "Python package imported (it registers fullconv::_full_conv_backward_dual)");
    out = dual->typed<BackwardSig>().call(grad_output, input, weight, stride, dilation, groups, mask);
  } else if (at::GradMode::is_enabled()) {
    out = call();
  } else {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    out = call();
  }
  if (mask[0]) grads[0] = std::get<0>(out);
  if (mask[1]) grads[1] = std::get<1>(out);
  if (mask[2]) grads[2] = std::get<2>(out);
  return grads;
}

// The gradient through an optional ReLU of `output`: where, not a product with a mask, so an
// inf or NaN gradient at a clamped output gives 0, as torch.relu's backward does.
at::Tensor relu_grad(const at::Tensor& grad, const at::Tensor& output, bool relu) {
  return relu ? at::where(output.gt(0), grad, at::zeros({}, grad.options())) : grad;
}

}  // namespace

class FullConvBackward : public torch::autograd::Function<FullConvBackward> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef dilation, int64_t groups) {
    at::Tensor output;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      static const auto op = find_op<FullConvSig>("fullconv::full_conv");
      output = op.call(input, weight, bias, stride, dilation, groups);
    }
    ctx->save_for_backward({input, weight});
    save_conv_args(ctx, bias, stride, dilation, groups);
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    auto g = conv_gradients(ctx, grad_outputs[0], saved[0], saved[1]);
    return {g[0], g[1], g[2], at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// full_conv_residual: act(full_conv(input, weight, bias) + residual zero-padded, centred)
class FullConvResidualBackward : public torch::autograd::Function<FullConvResidualBackward> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, const at::Tensor& residual,
                            at::IntArrayRef stride, at::IntArrayRef dilation, int64_t groups,
                            at::IntArrayRef residual_padding, bool relu) {
    at::Tensor output;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      static const auto op = find_op<ResidualSig>("fullconv::full_conv_residual");
      output = op.call(input, weight, bias, residual, stride, dilation, groups, residual_padding, relu);
    }
    ctx->save_for_backward({input, weight, relu ? output : at::Tensor()});
    save_conv_args(ctx, bias, stride, dilation, groups);
    ctx->saved_data["residual_padding"] = residual_padding.vec();
    ctx->saved_data["relu"] = relu;
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto g = relu_grad(grad_outputs[0], saved[2], ctx->saved_data["relu"].toBool());
    auto grads = conv_gradients(ctx, g, saved[0], saved[1]);
    const size_t residual_index = ctx->saved_data["has_bias"].toBool() ? 3 : 2;
    at::Tensor grad_residual;
    if (ctx->needs_input_grad(residual_index))
      grad_residual = residual_region(g, ctx->saved_data["residual_padding"].toIntVector());
    return {grads[0], grads[1], grads[2], grad_residual, at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

// padded_add: act(input + residual zero-padded, centred)
class PaddedAddBackward : public torch::autograd::Function<PaddedAddBackward> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& residual,
                            at::IntArrayRef residual_padding, bool relu) {
    at::Tensor output;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      static const auto op = find_op<PaddedAddSig>("fullconv::padded_add");
      output = op.call(input, residual, residual_padding, relu);
    }
    ctx->save_for_backward({relu ? output : at::Tensor()});
    ctx->saved_data["residual_padding"] = residual_padding.vec();
    ctx->saved_data["relu"] = relu;
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto g = relu_grad(grad_outputs[0], saved[0], ctx->saved_data["relu"].toBool());
    at::Tensor grad_residual;
    if (ctx->needs_input_grad(1))
      grad_residual = residual_region(g, ctx->saved_data["residual_padding"].toIntVector());
    return {ctx->needs_input_grad(0) ? g : at::Tensor(), grad_residual, at::Tensor(), at::Tensor()};
  }
};

namespace {

// Nested tensors reach these kernels through the Autograd alias key, and autograd's own
// bookkeeping would read their sizes (an internal error): refuse them first, by name.
void check_not_nested(const char* op_name, std::initializer_list<const at::Tensor*> tensors) {
  for (const at::Tensor* t : tensors)
    TORCH_CHECK_TYPE(!(t->defined() && t->is_nested()), op_name,
                     ": nested tensors are not supported (convolve each component tensor)");
}

at::Tensor full_conv_autograd(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                              at::IntArrayRef dilation, int64_t groups) {
  check_not_nested("full_conv", {&input, &weight, bias.has_value() ? &*bias : &weight});
  return FullConvBackward::apply(input, weight, bias, stride, dilation, groups);
}

at::Tensor full_conv_residual_autograd(const at::Tensor& input, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias, const at::Tensor& residual,
                                       at::IntArrayRef stride, at::IntArrayRef dilation, int64_t groups,
                                       at::IntArrayRef residual_padding, bool relu) {
  check_not_nested("full_conv_residual", {&input, &weight, &residual, bias.has_value() ? &*bias : &weight});
  return FullConvResidualBackward::apply(input, weight, bias, residual, stride, dilation, groups,
                                         residual_padding, relu);
}

at::Tensor padded_add_autograd(const at::Tensor& input, const at::Tensor& residual,
                               at::IntArrayRef residual_padding, bool relu) {
  check_not_nested("padded_add", {&input, &residual});
  return PaddedAddBackward::apply(input, residual, residual_padding, relu);
}

}  // namespace
}  // namespace fullconv

TORCH_LIBRARY_IMPL(fullconv, Autograd, m) {
  m.impl("full_conv", &fullconv::full_conv_autograd);
  m.impl("full_conv_residual", &fullconv::full_conv_residual_autograd);
  m.impl("padded_add", &fullconv::padded_add_autograd);
}
