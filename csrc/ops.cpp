// The fullconv operator library: schemas, argument checks, autocast.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <Python.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <utility>
#include <vector>

#include "conv_args.h"
#include "cpu/blocked_kernels.h"

namespace fullconv {

namespace {

void check_supported_dtype(at::ScalarType dt, const char* op_name) {
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16, op_name,
                   ": unsupported dtype ", dt, " (supported: float64, float32, float16, bfloat16)");
}

std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream os;
  os << sizes;
  return os.str();
}

}  // namespace

ConvShape check_and_make_shape(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                               at::IntArrayRef dilation, int64_t groups, const char* op_name) {
  TORCH_CHECK_TYPE(input.defined(), op_name, ": input is undefined");
  TORCH_CHECK_TYPE(weight.defined(), op_name, ": weight is undefined");
  const int64_t wdim = weight.dim();
  TORCH_CHECK_VALUE(wdim >= 3 && wdim <= 5, op_name,
                    ": weight must have 3, 4 or 5 dims (out_channels, in_channels/groups, "
                    "*kernel_size) for 1-, 2- or 3-D convolution, got shape ",
                    shape_str(weight.sizes()));
  const int nd = static_cast<int>(wdim - 2);
  const bool batched = input.dim() == wdim;
  TORCH_CHECK_VALUE(batched || input.dim() == wdim - 1, op_name, ": expected ", wdim - 1,
                    "-D (unbatched) or ", wdim, "-D (batched) input for a ", nd,
                    "-D weight of shape ", shape_str(weight.sizes()), ", got input of shape ",
                    shape_str(input.sizes()));
  TORCH_CHECK_TYPE(input.scalar_type() == weight.scalar_type(), op_name,
                   ": input and weight must have the same dtype, got ", input.scalar_type(),
                   " and ", weight.scalar_type());
  const auto dt = input.scalar_type();
  check_supported_dtype(dt, op_name);
  TORCH_CHECK_VALUE(input.device() == weight.device(), op_name,
                    ": input and weight must be on the same device, got ", input.device(),
                    " and ", weight.device());
  TORCH_CHECK_VALUE(static_cast<int64_t>(stride.size()) == nd, op_name, ": stride must have ",
                    nd, " entries for a ", nd, "-D convolution, got ", stride.size());
  TORCH_CHECK_VALUE(static_cast<int64_t>(dilation.size()) == nd, op_name,
                    ": dilation must have ", nd, " entries for a ", nd,
                    "-D convolution, got ", dilation.size());
  for (int i = 0; i < nd; ++i) {
    TORCH_CHECK_VALUE(stride[i] > 0, op_name, ": stride must be positive, got ", stride);
    TORCH_CHECK_VALUE(dilation[i] > 0, op_name, ": dilation must be positive, got ", dilation);
  }
  TORCH_CHECK_VALUE(groups > 0, op_name, ": groups must be positive, got ", groups);

  ConvShape s;
  s.ndim = nd;
  s.groups = groups;
  s.batch = batched ? input.size(0) : 1;
  const int64_t cdim = batched ? 1 : 0;
  s.in_channels = input.size(cdim);
  s.out_channels = weight.size(0);
  TORCH_CHECK_VALUE(s.out_channels > 0, op_name, ": weight must have at least one output channel, got shape ",
                    shape_str(weight.sizes()));
  TORCH_CHECK_VALUE(s.out_channels % groups == 0, op_name, ": out_channels (", s.out_channels,
                    ") must be divisible by groups (", groups, ")");
  TORCH_CHECK_VALUE(weight.size(1) * groups == s.in_channels, op_name, ": input has ",
                    s.in_channels, " channels but weight of shape ", shape_str(weight.sizes()),
                    " with groups=", groups, " expects ", weight.size(1) * groups);
  const int off = kMaxSpatialDims - nd;
  for (int i = 0; i < nd; ++i) {
    const int64_t k = weight.size(2 + i);
    const int64_t L = input.size(cdim + 1 + i);
    TORCH_CHECK_VALUE(k > 0, op_name, ": kernel size must be positive in every dim, got weight of shape ",
                      shape_str(weight.sizes()));
    TORCH_CHECK_VALUE(L > 0 || input.numel() == 0, op_name,
                      ": spatial dims of the input must be non-empty, got input of shape ",
                      shape_str(input.sizes()));
    // as F.convNd: an empty spatial dim only in a zero-batch input, and there the padded
    // extent must still hold the dilated kernel (kernel size > 1 along that dim)
    TORCH_CHECK_VALUE(L > 0 || (batched && input.size(0) == 0), op_name,
                      ": only zero batch or zero channel inputs may be empty, got input of shape ",
                      shape_str(input.sizes()));
    TORCH_CHECK_VALUE(L > 0 || k > 1, op_name, ": an empty spatial dim with kernel size 1 leaves no output ",
                      "position (input ", shape_str(input.sizes()), ", weight ", shape_str(weight.sizes()), ")");
    // the padded extent L + 2 d (k - 1) must stay well inside 64-bit index math
    constexpr int64_t kMaxExtent = int64_t(1) << 62;
    TORCH_CHECK_VALUE(k == 1 || dilation[i] <= (kMaxExtent - L) / (2 * (k - 1)), op_name, ": dilation ", dilation,
                      " with a kernel of shape ", shape_str(weight.sizes()),
                      " pads the input beyond the 64-bit index range");
    s.in_size[off + i] = L;
    s.kernel[off + i] = k;
    // A stride beyond the padded extent gives one output position, as the extent itself
    // does: the kernels see at most that (so that o * stride and its sums stay far inside
    // 64-bit range however large the stride asked for).
    s.stride[off + i] = std::min<int64_t>(stride[i], L + 2 * dilation[i] * (k - 1));
    s.dilation[off + i] = dilation[i];
  }
  s.compute_output_size();
  {  // the output's bytes must be countable in 64 bits (a huge dilation or stride-1 extent)
    uint64_t bytes = static_cast<uint64_t>(c10::elementSize(dt));
    bool overflow = false;
    const int64_t lead[2] = {batched ? s.batch : 1, s.out_channels};
    for (int64_t v : lead) overflow = overflow || __builtin_mul_overflow(bytes, static_cast<uint64_t>(v), &bytes);
    for (int i = 0; i < nd; ++i)
      overflow = overflow || __builtin_mul_overflow(bytes, static_cast<uint64_t>(s.out_size[off + i]), &bytes);
    TORCH_CHECK_VALUE(!overflow && bytes <= static_cast<uint64_t>(INT64_MAX), op_name, ": the output of a ",
                      shape_str(input.sizes()), " input and a ", shape_str(weight.sizes()), " weight with dilation ",
                      dilation, " has more bytes than a 64-bit size can count");
  }
  if (bias.has_value() && bias->defined()) {
    const auto& b = *bias;
    TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == s.out_channels, op_name,
                      ": bias must be 1-D with out_channels (", s.out_channels,
                      ") elements, got shape ", shape_str(b.sizes()));
    TORCH_CHECK_TYPE(b.scalar_type() == dt, op_name,
                     ": bias must have the dtype of input and weight (", dt, "), got ",
                     b.scalar_type());
    TORCH_CHECK_VALUE(b.device() == input.device(), op_name,
                      ": bias must be on the device of input and weight (", input.device(),
                      "), got ", b.device());
  }
  return s;
}

void check_grad_output(const at::Tensor& grad_output, const at::Tensor& input,
                       const ConvShape& shape, bool batched) {
  const auto expected = output_shape(shape, batched);
  TORCH_CHECK_VALUE(grad_output.sizes() == at::IntArrayRef(expected),
                    "full_conv_backward: grad_output must have the output's shape ",
                    shape_str(expected), ", got ", shape_str(grad_output.sizes()));
  TORCH_CHECK_TYPE(grad_output.scalar_type() == input.scalar_type(),
                   "full_conv_backward: grad_output must have dtype ", input.scalar_type(),
                   ", got ", grad_output.scalar_type());
  TORCH_CHECK_VALUE(grad_output.device() == input.device(),
                    "full_conv_backward: grad_output must be on ", input.device(), ", got ",
                    grad_output.device());
}

at::Tensor grad_bias_from(const at::Tensor& grad_output, at::ScalarType dtype) {
  const bool reduced = dtype == at::kHalf || dtype == at::kBFloat16;
  std::vector<int64_t> dims;
  // batched: reduce dim 0 and spatial dims; unbatched: only spatial dims
  const int64_t first_spatial = grad_output.dim() >= 3 ? 2 : 1;
  if (first_spatial == 2) dims.push_back(0);
  for (int64_t i = first_spatial; i < grad_output.dim(); ++i) dims.push_back(i);
  return grad_output.sum(dims, false, reduced ? at::kFloat : dtype).to(dtype);
}

at::Tensor finish_grad_input(const at::Tensor& gx, const at::Tensor& input, bool batched) {
  auto g = gx.view(batched ? input.sizes() : input.unsqueeze(0).sizes());
  if (!batched) g = g.squeeze(0);
  return to_layout(g, input.scalar_type(), input.suggest_memory_format());
}

void check_residual(const at::Tensor& residual, at::IntArrayRef out_shape,
                    at::IntArrayRef padding, const at::Tensor& like, const char* op_name) {
  TORCH_CHECK_TYPE(residual.defined(), op_name, ": residual is undefined");
  check_supported_dtype(like.scalar_type(), op_name);
  const int64_t nd = static_cast<int64_t>(padding.size());
  TORCH_CHECK_VALUE(residual.dim() == static_cast<int64_t>(out_shape.size()) && nd >= 1 &&
                        nd <= kMaxSpatialDims && residual.dim() >= nd + 1,
                    op_name, ": residual of shape ", residual.sizes(), " and padding ", padding,
                    " do not fit an output of shape ", out_shape);
  const int64_t first_spatial = residual.dim() - nd;
  for (int64_t i = 0; i < residual.dim(); ++i) {
    const int64_t pad = i >= first_spatial ? padding[i - first_spatial] : 0;
    TORCH_CHECK_VALUE(pad >= 0, op_name, ": residual padding must be non-negative, got ", padding);
    // (out - residual) / 2, not residual + 2 * pad: a huge padding must not wrap around
    const int64_t gap = out_shape[i] - residual.size(i);
    TORCH_CHECK_VALUE(gap >= 0 && gap % 2 == 0 && pad == gap / 2, op_name, ": residual of shape ",
                      residual.sizes(), " padded by ", padding, " on each side does not match the output shape ",
                      out_shape, " (dim ", i, ")");
  }
  TORCH_CHECK_TYPE(residual.scalar_type() == like.scalar_type(), op_name,
                   ": residual must have dtype ", like.scalar_type(), ", got ", residual.scalar_type());
  TORCH_CHECK_VALUE(residual.device() == like.device(), op_name, ": residual must be on ",
                    like.device(), ", got ", residual.device());
}

ResidualGeometry residual_geometry(at::IntArrayRef out_shape, const at::Tensor& residual,
                                   at::IntArrayRef padding) {
  ResidualGeometry geo;
  const int64_t nd = static_cast<int64_t>(padding.size());
  int64_t spatial = 1, total = 1;
  for (int64_t i = 0; i < nd; ++i) {
    const int64_t slot = kMaxSpatialDims - nd + i;
    geo.out_size[slot] = out_shape[out_shape.size() - nd + i];
    geo.res_size[slot] = residual.size(residual.dim() - nd + i);
    geo.pad[slot] = padding[i];
    spatial *= geo.out_size[slot];
  }
  for (const int64_t d : out_shape) total *= d;
  geo.planes = spatial == 0 ? 0 : total / spatial;
  return geo;
}

at::Tensor residual_region(const at::Tensor& out, at::IntArrayRef padding) {
  at::Tensor region = out;
  const int64_t first_spatial = out.dim() - static_cast<int64_t>(padding.size());
  for (size_t i = 0; i < padding.size(); ++i) {
    const int64_t dim = first_spatial + static_cast<int64_t>(i);
    region = region.narrow(dim, padding[i], out.size(dim) - 2 * padding[i]);
  }
  return region;
}

std::vector<int64_t> output_shape(const ConvShape& shape, bool batched) {
  std::vector<int64_t> out;
  if (batched) out.push_back(shape.batch);
  out.push_back(shape.out_channels);
  for (int i = kMaxSpatialDims - shape.ndim; i < kMaxSpatialDims; ++i)
    out.push_back(shape.out_size[i]);
  return out;
}

at::MemoryFormat output_memory_format(const at::Tensor& input, const at::Tensor& weight) {
  const int64_t wdim = weight.dim();
  // unbatched inputs give unbatched outputs, which have no channels-last format
  if ((wdim != 4 && wdim != 5) || input.dim() != wdim) return at::MemoryFormat::Contiguous;
  const auto cl = (wdim == 4) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::ChannelsLast3d;
  const bool input_cl = input.suggest_memory_format() == cl;
  const bool weight_cl = weight.suggest_memory_format() == cl;
  return (input_cl || weight_cl) ? cl : at::MemoryFormat::Contiguous;
}

at::Tensor one_tap_convolution(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, const ConvShape& s,
                               at::IntArrayRef stride, at::IntArrayRef dilation, int64_t groups) {
  TORCH_INTERNAL_ASSERT(s.kernel_volume() == 1);
  const bool batched = input.dim() == weight.dim();
  const std::vector<int64_t> zeros(s.ndim, 0);
  auto y = at::convolution(batched ? input : input.unsqueeze(0), weight, bias, stride, zeros, dilation, false,
                           zeros, groups);
  if (!batched) y = y.squeeze(0);
  const auto fmt = batched ? output_memory_format(input, weight) : at::MemoryFormat::Contiguous;
  const auto like = at::empty(y.sizes(), y.options().device(at::kMeta).memory_format(fmt));
  if (y.strides() == like.strides()) return y;
  if (y.is_non_overlapping_and_dense()) {  // (a layout change by transposes on the CPU)
    auto flipped = to_layout(y, y.scalar_type(), fmt);
    if (flipped.strides() == like.strides()) return flipped;
  }
  auto out = at::empty(y.sizes(), y.options().memory_format(fmt));
  out.copy_(y);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> one_tap_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                                               const at::Tensor& weight, const ConvShape& s,
                                                               at::IntArrayRef stride, at::IntArrayRef dilation,
                                                               int64_t groups, std::array<bool, 3> output_mask) {
  TORCH_INTERNAL_ASSERT(s.kernel_volume() == 1);
  const bool batched = input.dim() == weight.dim();
  const auto gyb = batched ? grad_output : grad_output.unsqueeze(0);
  const std::vector<int64_t> zeros(s.ndim, 0);
  at::Tensor grad_input = at::empty({0}, input.options());
  at::Tensor grad_weight = at::empty({0}, input.options());
  at::Tensor grad_bias = at::empty({0}, input.options());
  if (output_mask[0] || output_mask[1]) {
    auto grads = at::convolution_backward(gyb, batched ? input : input.unsqueeze(0), weight, std::nullopt, stride,
                                          zeros, dilation, false, zeros, groups,
                                          {output_mask[0], output_mask[1], false});
    if (output_mask[0]) grad_input = finish_grad_input(std::get<0>(grads), input, batched);
    if (output_mask[1]) grad_weight = std::get<1>(grads).contiguous(weight.suggest_memory_format());
  }
  if (output_mask[2]) grad_bias = grad_bias_from(gyb, input.scalar_type());
  return {grad_input, grad_weight, grad_bias};
}

namespace {
// Exponent bits all ones: infinity or NaN. Integer operations, so the loop vectorises.
template <typename Bits>
bool any_nonfinite_bits(const void* data, int64_t n, Bits exponent) {
  const auto* p = static_cast<const unsigned char*>(data);
  constexpr int64_t kBlock = 4096;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = std::min(n, i0 + kBlock);
    Bits any = 0;
    for (int64_t i = i0; i < i1; ++i) {
      Bits b;
      std::memcpy(&b, p + i * sizeof(Bits), sizeof(Bits));
      any |= static_cast<Bits>((b & exponent) == exponent);
    }
    if (any != 0) return true;
  }
  return false;
}

// Whether every element is finite: one pass over float32/float64 CPU tensors with no
// temporaries (isfinite().all() costs ~1 ns per element through four temporaries: 3 ms on a
// 512x512x3x3 weight, every call).
bool all_finite(const at::Tensor& t) {
  if (t.device().is_cpu() && t.scalar_type() == at::kFloat) {
    const auto c = t.contiguous();
    return !any_nonfinite_bits<uint32_t>(c.const_data_ptr(), c.numel(), 0x7f800000u);
  }
  if (t.device().is_cpu() && t.scalar_type() == at::kDouble) {
    const auto c = t.contiguous();
    return !any_nonfinite_bits<uint64_t>(c.const_data_ptr(), c.numel(), 0x7ff0000000000000ull);
  }
  return t.isfinite().all().item<bool>();
}
}  // namespace

namespace {
// Flat tap t as per-dim coordinates k[i] and the outputs [lo[i], hi[i]] at which that
// coordinate reads real input (empty when lo > hi); outside them it reads padding.
struct TapBox {
  int64_t k[kMaxSpatialDims], lo[kMaxSpatialDims], hi[kMaxSpatialDims];
};

TapBox tap_box(const ConvShape& s, int64_t t) {
  TapBox b{};
  for (int i = kMaxSpatialDims - 1; i >= kMaxSpatialDims - s.ndim; --i) {
    b.k[i] = t % s.kernel[i];
    t /= s.kernel[i];
    tap_output_range(b.k[i], s.in_size[i], s.kernel[i], s.stride[i], s.dilation[i], &b.lo[i], &b.hi[i]);
  }
  return b;
}
}  // namespace

void apply_nonfinite_weight_padding(at::Tensor& output, const at::Tensor& weight,
                                    const ConvShape& s) {
  if (output.numel() == 0 || all_finite(weight)) return;
  // bad[co, t]: some input channel's weight at tap t of output channel co is not finite.
  const auto bad = weight.isfinite().logical_not().flatten(2).any(1).cpu();
  const auto bad_acc = bad.accessor<bool, 2>();
  const int off = kMaxSpatialDims - s.ndim;
  const bool batched = output.dim() == s.ndim + 2;
  at::Tensor out = batched ? output : output.unsqueeze(0);
  for (int64_t co = 0; co < s.out_channels; ++co) {
    for (int64_t t = 0; t < bad.size(1); ++t) {
      if (!bad_acc[co][t]) continue;
      const TapBox box = tap_box(s, t);
      for (int i = kMaxSpatialDims - 1; i >= off; --i) {
        // Outputs outside [first_inside, last_inside] read padding through the tap.
        const int64_t first_inside = box.lo[i], last_inside = box.hi[i];
        const int64_t dim = 2 + (i - off);
        auto plane = out.select(1, co);  // [N, spatial...]; spatial dim i is dim - 1 here
        if (first_inside > 0)
          plane.narrow(dim - 1, 0, std::min(first_inside, s.out_size[i])).fill_(NAN);
        if (last_inside + 1 < s.out_size[i])
          plane.narrow(dim - 1, last_inside + 1, s.out_size[i] - last_inside - 1).fill_(NAN);
      }
    }
  }
}

namespace {
// Does every output position along dim i read real input through some tap? (Not always: a
// dilation larger than the input leaves outputs that see only padding.)
bool real_taps_everywhere(const ConvShape& s, int i) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (int64_t k = 0; k < s.kernel[i]; ++k) {
    int64_t lo, hi;
    tap_output_range(k, s.in_size[i], s.kernel[i], s.stride[i], s.dilation[i], &lo, &hi);
    if (lo <= hi) ranges.emplace_back(lo, hi);
  }
  std::sort(ranges.begin(), ranges.end());
  int64_t reach = 0;  // outputs [0, reach) are covered by the ranges seen so far
  for (const auto& [lo, hi] : ranges) {
    if (lo > reach) return false;
    reach = std::max(reach, hi + 1);
  }
  return reach >= s.out_size[i];
}
}  // namespace

void apply_nonfinite_grad_output_padding(at::Tensor& grad_weight, const at::Tensor& grad_output,
                                         const ConvShape& s) {
  if (grad_weight.numel() == 0 || grad_output.numel() == 0) return;
  const int off = kMaxSpatialDims - s.ndim;
  if (all_finite(grad_weight)) {
    // A non-finite grad_output element at an output that reads real input makes that tap's
    // grad_weight non-finite too; only outputs that read padding alone can hide one.
    bool everywhere = true;
    for (int i = off; i < kMaxSpatialDims; ++i) everywhere = everywhere && real_taps_everywhere(s, i);
    if (everywhere || all_finite(grad_output)) return;
  }
  const auto gy = grad_output.dim() == s.ndim + 2 ? grad_output : grad_output.unsqueeze(0);
  const auto bad = gy.isfinite().logical_not().any(0);  // [Cout, *out]
  const auto total = bad.flatten(1).sum(1);
  if (!total.gt(0).any().item<bool>()) return;
  for (int64_t t = 0; t < s.kernel_volume(); ++t) {
    // the outputs at which tap t reads real input form a box; a bad element outside it met padding
    const TapBox tb = tap_box(s, t);
    at::Tensor box = bad, taps = grad_weight;
    for (int i = kMaxSpatialDims - 1; i >= off; --i) {
      box = box.narrow(1 + i - off, tb.lo[i], std::max<int64_t>(0, tb.hi[i] - tb.lo[i] + 1));
      taps = taps.select(2 + i - off, tb.k[i]);  // dims after 2 + i - off are selected already
    }
    const auto meets_padding = total.gt(box.flatten(1).sum(1));  // [Cout]
    taps.masked_fill_(meets_padding.unsqueeze(1), NAN);
  }
}

namespace {

template <c10::DeviceType device_type>
constexpr c10::DispatchKey autocast_key() {
  return device_type == c10::DeviceType::CUDA ? c10::DispatchKey::AutocastCUDA
                                              : c10::DispatchKey::AutocastCPU;
}

// Autocast: run in the autocast dtype, as nn.ConvNd does (conv is on the lower-precision list).
template <c10::DeviceType device_type>
at::Tensor full_conv_autocast(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                              at::IntArrayRef dilation, int64_t groups) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(autocast_key<device_type>());
  const auto dtype = at::autocast::get_autocast_dtype(device_type);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fullconv::full_conv", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                         const std::optional<at::Tensor>&, at::IntArrayRef,
                                         at::IntArrayRef, int64_t)>();
  std::optional<at::Tensor> cast_bias;
  if (bias.has_value() && bias->defined())
    cast_bias = at::autocast::cached_cast(dtype, *bias, device_type);
  return op.call(at::autocast::cached_cast(dtype, input, device_type),
                 at::autocast::cached_cast(dtype, weight, device_type), cast_bias, stride,
                 dilation, groups);
}

template <c10::DeviceType device_type>
at::Tensor full_conv_residual_autocast(const at::Tensor& input, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias,
                                       const at::Tensor& residual, at::IntArrayRef stride,
                                       at::IntArrayRef dilation, int64_t groups,
                                       at::IntArrayRef residual_padding, bool relu) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(autocast_key<device_type>());
  const auto dtype = at::autocast::get_autocast_dtype(device_type);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fullconv::full_conv_residual", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                         const std::optional<at::Tensor>&, const at::Tensor&,
                                         at::IntArrayRef, at::IntArrayRef, int64_t,
                                         at::IntArrayRef, bool)>();
  std::optional<at::Tensor> cast_bias;
  if (bias.has_value() && bias->defined())
    cast_bias = at::autocast::cached_cast(dtype, *bias, device_type);
  return op.call(at::autocast::cached_cast(dtype, input, device_type),
                 at::autocast::cached_cast(dtype, weight, device_type), cast_bias,
                 at::autocast::cached_cast(dtype, residual, device_type), stride, dilation,
                 groups, residual_padding, relu);
}

// padded_add is an addition: under autocast its operands are promoted to the wider dtype,
// as `a + b` would be.
template <c10::DeviceType device_type>
at::Tensor padded_add_autocast(const at::Tensor& input, const at::Tensor& residual,
                               at::IntArrayRef residual_padding, bool relu) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(autocast_key<device_type>());
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fullconv::padded_add", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, at::IntArrayRef, bool)>();
  const auto dtype = at::result_type(input, residual);
  return op.call(input.to(dtype), residual.to(dtype), residual_padding, relu);
}

}  // namespace

}  // namespace fullconv

TORCH_LIBRARY(fullconv, m) {
  m.def(
      "full_conv(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] dilation, "
      "int groups) -> Tensor");
  // Gradients of full_conv. Outputs not requested by output_mask are returned as empty
  // (shape [0]) tensors and not computed.
  m.def(
      "full_conv_backward(Tensor grad_output, Tensor input, Tensor weight, int[] stride, "
      "int[] dilation, int groups, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // Fused residual epilogue: full_conv(input, weight, bias) + residual zero-padded by
  // residual_padding on both sides of each spatial dim, then ReLU if relu.
  m.def(
      "full_conv_residual(Tensor input, Tensor weight, Tensor? bias, Tensor residual, "
      "int[] stride, int[] dilation, int groups, int[] residual_padding, bool relu) -> Tensor");
  // input + residual zero-padded by residual_padding (centred), then ReLU if relu; one pass,
  // no padded copy of the residual.
  m.def("padded_add(Tensor input, Tensor residual, int[] residual_padding, bool relu) -> Tensor");
  // Whether this CPU runs the register-blocked kernels (AVX2 + FMA); tests force that path
  // only where it exists.
  m.def("_cpu_blocked_available() -> bool", []() { return fullconv::blocked::available(); });
  // Calls so far of a CPU blocked kernel or copy, by name (tests: which kernel a problem took).
  m.def("_cpu_kernel_calls(str name) -> int", [](std::string name) { return fullconv::cpu_kernel_calls(name); });
  // to_layout (conv_args.h): t in `dtype`, NCHW or channels-last (tests of the layout copies).
  m.def("_to_layout(Tensor t, ScalarType dtype, bool channels_last) -> Tensor",
        [](const at::Tensor& t, c10::ScalarType dtype, bool channels_last) {
          const auto fmt = !channels_last ? at::MemoryFormat::Contiguous
                           : t.dim() == 5 ? at::MemoryFormat::ChannelsLast3d
                                          : at::MemoryFormat::ChannelsLast;
          return fullconv::to_layout(t, dtype, fmt);
        });
}

TORCH_LIBRARY_IMPL(fullconv, AutocastCPU, m) {
  m.impl("full_conv", &fullconv::full_conv_autocast<c10::DeviceType::CPU>);
  m.impl("full_conv_residual", &fullconv::full_conv_residual_autocast<c10::DeviceType::CPU>);
  m.impl("padded_add", &fullconv::padded_add_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(fullconv, AutocastCUDA, m) {
  m.impl("full_conv", &fullconv::full_conv_autocast<c10::DeviceType::CUDA>);
  m.impl("full_conv_residual", &fullconv::full_conv_residual_autocast<c10::DeviceType::CUDA>);
  m.impl("padded_add", &fullconv::padded_add_autocast<c10::DeviceType::CUDA>);
}

// The extension is imported as the Python module fullconv._C; the operators register
// themselves through the static initialisers above when the library is loaded.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
