// Tensors -> CUDA launchers: device guard, current stream, dtype mapping, a launch-error check
// after every launch, the choice between the tiled implicit-GEMM kernels and the direct ones,
// and the CUDA registrations of the fullconv operators.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>

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

// ---- Which kernel family runs a pass.
//
// The tiled implicit-GEMM kernels (tensor cores for float16/bfloat16 and TF32, FMA tiles for
// float32/float64) need enough output channels of the pass to fill their 64-column tiles and,
// for tensor cores, sm_80 or newer; the direct kernels (register-blocked; one thread or block
// per element where a problem exceeds their tables) take the rest: depthwise and few-channel
// layers, and in float32 (without TF32) and float64 the forward and grad_weight of layers with
// at most 4 input channels per group (RGB stems: the tiles' flat reductions over 3 channels x
// taps ran at 2-11 TFLOP/s there, NOTES.md 21-26, 29, 30; few_inputs_direct).
// Where the channel counts allow (cuda::igemm_channels_last_ok), the tiled forward and
// grad_input read their source from a channels-last copy with 16-byte asynchronous copies
// (no copy at all for a channels_last input); otherwise they gather element by element.
// FULLCONV_CUDA_ALGORITHM=auto|direct|igemm|igemm-gather forces one family for every pass
// (igemm-gather: the tiled kernels without the channels-last reads; tests use each).
// FULLCONV_CUDA_ROW_REGIONS=0 runs the tiled forward's rows in plain order instead of border
// regions apart from the interior (cuda::IgemmLayout::row_regions), to measure the difference.
// FULLCONV_CUDA_DIRECT=element runs the direct forward and grad_input one thread per element
// instead of register-blocked (direct_kernels) and, under auto, the few-input-channel layers'
// forward and grad_weight on the tiles again: everything as before those kernels, to time them.
// FULLCONV_CUDA_TILES picks the tiles of the tiled kernels (cuda::IgemmLayout::tiles): auto (the
// default, per problem: tiles_for), or one kind for every problem, to time them side by side:
// base (WMMA tiles for float16/bfloat16, 64 x 64 FMA tiles for float32), mma / mma-narrow
// (float16/bfloat16 channels-last kernels on mma.sync tiles from swizzled shared memory, 128
// or 64 columns where a pass has more than 64), mma-wide (the same on 256-row tiles of 128 or 64
// columns, cuda::Tiles::kMmaWide), simt-wide (the float32 forward and grad_input
// on 128 x 64 FMA tiles read as 16-byte vectors), wgmma (the float16/bfloat16 channels-last
// forward and grad_input of more than 64 columns on Hopper's wgmma, cuda::Tiles::kWgmma, on a
// compute-capability-9.0 device with a build holding sm_90a code; elsewhere as mma),
// wgmma-wide (the same on 128 x 256 tiles where a pass has more than 128 columns).
using Pass = cuda::GemmPass;

std::string cuda_algorithm() {
  const char* env = std::getenv("FULLCONV_CUDA_ALGORITHM");
  const std::string v = env ? env : "auto";
  TORCH_CHECK_VALUE(v == "auto" || v == "direct" || v == "igemm" || v == "igemm-gather" || v.empty(),
                    "FULLCONV_CUDA_ALGORITHM must be auto, direct, igemm or igemm-gather, got '", v, "'");
  return v.empty() ? "auto" : v;
}

bool row_regions() {
  const char* env = std::getenv("FULLCONV_CUDA_ROW_REGIONS");
  const std::string v = env ? env : "1";
  TORCH_CHECK_VALUE(v == "0" || v == "1" || v.empty(), "FULLCONV_CUDA_ROW_REGIONS must be 0 or 1, got '", v, "'");
  return v != "0";
}

// The FULLCONV_CUDA_TILES setting; nullopt: auto.
std::optional<cuda::Tiles> cuda_tiles() {
  const char* env = std::getenv("FULLCONV_CUDA_TILES");
  const std::string v = env ? env : "auto";
  TORCH_CHECK_VALUE(v == "auto" || v == "base" || v == "mma" || v == "mma-narrow" || v == "mma-wide" ||
                        v == "simt-wide" || v == "wgmma" || v == "wgmma-wide" || v.empty(),
                    "FULLCONV_CUDA_TILES must be auto, base, mma, mma-narrow, mma-wide, simt-wide, wgmma or wgmma-wide, "
                    "got '", v, "'");
  if (v == "base") return cuda::Tiles::kBase;
  if (v == "mma") return cuda::Tiles::kMma;
  if (v == "mma-narrow") return cuda::Tiles::kMmaNarrow;
  if (v == "mma-wide") return cuda::Tiles::kMmaWide;
  if (v == "simt-wide") return cuda::Tiles::kSimtWide;
  if (v == "wgmma") return cuda::Tiles::kWgmma;
  if (v == "wgmma-wide") return cuda::Tiles::kWgmmaWide;
  return std::nullopt;
}

// FULLCONV_CUDA_DIRECT (blocked | element), read per call; see the comment at the top.
cuda::DirectKernels direct_kernels() {
  const char* env = std::getenv("FULLCONV_CUDA_DIRECT");
  const std::string v = env ? env : "blocked";
  TORCH_CHECK_VALUE(v == "blocked" || v == "element" || v.empty(),
                    "FULLCONV_CUDA_DIRECT must be blocked or element, got '", v, "'");
  return v == "element" ? cuda::DirectKernels::kPerElement : cuda::DirectKernels::kBlocked;
}

// An attribute of the current device (the caller holds a CUDAGuard).
int device_attribute(cudaDeviceAttr attr) {
  int device = 0, value = 0;
  check_launch(cudaGetDevice(&device), "device query");
  check_launch(cudaDeviceGetAttribute(&value, attr, device), "device query");
  return value;
}

// ask() for the current device, asked once per device (each question a lambda of its own type,
// so each has its own answers).
template <typename F>
bool per_device(F&& ask) {
  int device = 0;
  check_launch(cudaGetDevice(&device), "device query");
  static std::mutex mutex;
  static std::unordered_map<int, bool> known;
  const std::lock_guard<std::mutex> lock(mutex);
  const auto it = known.find(device);
  if (it != known.end()) return it->second;
  return known[device] = ask();
}

// Tensor cores on the current device: compute capability 8.0+ and kernels built for it.
bool tensor_cores_usable() {
  return per_device(
      [] { return device_attribute(cudaDevAttrComputeCapabilityMajor) >= 8 && cuda::tensor_core_kernels_built(); });
}

// float32 runs on TF32 tensor cores only where PyTorch's convolutions may: the cuDNN
// convolution flag (torch.backends.cudnn.allow_tf32, or in newer releases
// torch.backends.cudnn.conv.fp32_precision). Releases differ in how it is asked:
// allowTF32CuDNN(Float32Op::CONV) (an optional<Float32Op> parameter), allowTF32CuDNN("conv"),
// or allowTF32CuDNN() (older); the question without an operation throws in the newer ones
// once the convolution and RNN settings differ. The first form that compiles is used.
template <typename F> struct FirstParam;
template <typename R, typename C, typename A> struct FirstParam<R (C::*)(A) const> {
  using type = std::remove_cv_t<std::remove_reference_t<A>>;
};
template <int N> struct Priority : Priority<N - 1> {};
template <> struct Priority<0> {};

template <typename Ctx>
auto tf32_for_convolutions(const Ctx& ctx, Priority<2>)
    -> decltype(ctx.allowTF32CuDNN(FirstParam<decltype(&Ctx::allowTF32CuDNN)>::type::value_type::CONV)) {
  return ctx.allowTF32CuDNN(FirstParam<decltype(&Ctx::allowTF32CuDNN)>::type::value_type::CONV);
}
template <typename Ctx>
auto tf32_for_convolutions(const Ctx& ctx, Priority<1>) -> decltype(ctx.allowTF32CuDNN(std::string("conv"))) {
  return ctx.allowTF32CuDNN(std::string("conv"));
}
template <typename Ctx>
bool tf32_for_convolutions(const Ctx& ctx, Priority<0>) {
  return ctx.allowTF32CuDNN();
}

// Hopper's wgmma tiles on the current device: compute capability 9.0 exactly (sm_90a code runs
// nowhere else) and a build holding that code.
bool wgmma_usable() {
  return per_device([] {
    return cuda::wgmma_kernels_built() && device_attribute(cudaDevAttrComputeCapabilityMajor) == 9 &&
           device_attribute(cudaDevAttrComputeCapabilityMinor) == 0;
  });
}

bool use_tf32(at::ScalarType dtype) {
  return dtype == at::kFloat && tf32_for_convolutions(at::globalContext(), Priority<2>());
}

// The tiles of one tiled pass. auto, from the side-by-side timings of benchmarks/NOTES.md 23
// (H200): kernels of more than one tap at unit stride (ResNet's 3x3 and 3x3x3 body layers) ran
// faster on the mma.sync tiles of at most 64 columns for float16/bfloat16 (0.81-0.97x the WMMA
// tiles' time per pass) and, with 64 or more input and output channels, on the wide FMA tiles
// for the float32 forward and grad_input (0.71-0.86x); strided layers, one-tap kernels and few
// channels were even or slower on both, and keep the base tiles.
cuda::Tiles tiles_for(at::ScalarType dtype, const ConvShape& s, Pass pass) {
  if (const auto forced = cuda_tiles())
    return cuda::is_wgmma(*forced) && !wgmma_usable() ? cuda::Tiles::kMma : *forced;
  if (s.kernel_volume() == 1 || !s.unit_stride()) return cuda::Tiles::kBase;
  if (dtype == at::kHalf || dtype == at::kBFloat16) return cuda::Tiles::kMmaNarrow;
  if (dtype == at::kFloat && !use_tf32(dtype) && pass != Pass::kGradWeight && s.in_channels_per_group() >= 64 &&
      s.out_channels_per_group() >= 64)
    return cuda::Tiles::kSimtWide;
  return cuda::Tiles::kBase;
}

// Under auto, whether the direct register-blocked kernels take the forward or grad_weight of a
// layer with at most 4 input channels per group (RGB stems) from the tiles, whose flat
// reductions over a few channels x taps gather every operand element on its own. They do in the
// FMA dtypes (float32 without TF32, float64): on the H200 run of benchmarks/NOTES.md 30 the
// direct float32 forward took 0.56-0.70x the tiles' time and the direct grad_weight 0.90x with
// 64 output channels per group. With tensor cores (float16/bfloat16, TF32) the tiles were level
// or ahead (forward 1.02-1.6x, grad_weight 1.1-2.1x the tiles' time for the direct kernels), and
// a grad_weight of fewer than 64 output channels per group fills only part of the direct
// kernel's 64 rows per block (1.6x the tiles' time at 32): those stay on the tiles where the
// tiles take them (the grad_weight branch of the backward keeps the direct kernel otherwise).
bool few_inputs_direct(at::ScalarType dtype, const ConvShape& s, Pass pass) {
  if (s.in_channels_per_group() > 4 || direct_kernels() == cuda::DirectKernels::kPerElement) return false;
  if ((dtype == at::kHalf || dtype == at::kBFloat16 || use_tf32(dtype)) && tensor_cores_usable()) return false;
  if (pass == Pass::kGradWeight) return s.out_channels_per_group() >= 64;
  return pass == Pass::kForward && cuda::forward_blocked_takes(launcher_dtype(dtype), s);
}

bool use_igemm(const ConvShape& s, at::ScalarType dtype, Pass pass) {
  const std::string algorithm = cuda_algorithm();
  if (algorithm == "direct") return false;
  const bool tensor_cores = dtype == at::kHalf || dtype == at::kBFloat16 || use_tf32(dtype);
  if (tensor_cores && !tensor_cores_usable()) {
    TORCH_CHECK(algorithm == "auto", "FULLCONV_CUDA_ALGORITHM=", algorithm, ": the tensor-core kernels (", dtype,
                dtype == at::kFloat ? " with TF32" : "", ") need a GPU of compute capability 8.0 or newer and a "
                "build for it (TORCH_CUDA_ARCH_LIST)");
    return false;
  }
  if (!cuda::igemm_grid_fits(s, pass)) return false;  // e.g. > 65535 column tiles x groups
  if (algorithm != "auto") return true;  // igemm, igemm-gather
  const int64_t cin_g = s.in_channels_per_group(), cout_g = s.out_channels_per_group();
  // (few reduction channels run the tiles' flat reduction, implicit_gemm.h)
  switch (pass) {
    case Pass::kForward: return cout_g >= 16 && !few_inputs_direct(dtype, s, pass);
    case Pass::kGradInput: return cin_g >= 16;
    case Pass::kGradWeight: return cout_g >= 8 && cin_g * cout_g >= 32;
  }
  return false;
}

// Whether a tiled pass reads its operands from channels-last copies (else it gathers from
// the usual layout).
bool channels_last_pass(at::ScalarType dtype, const ConvShape& s, Pass pass) {
  return cuda_algorithm() != "igemm-gather" &&
         cuda::igemm_channels_last_ok(launcher_dtype(dtype), use_tf32(dtype), s, pass);
}

// An operand with its batch dimension as (N, *spatial, C), contiguous and 16-byte aligned: a
// channels_last tensor as it is.
at::Tensor channels_last_copy(const at::Tensor& batched) {
  auto cl = batched.movedim(1, -1).contiguous();
  if (reinterpret_cast<uintptr_t>(cl.const_data_ptr()) % 16 != 0) cl = cl.clone();  // a view at an odd offset
  return cl;
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
  // A kernel of one tap has no padding: an ordinary convolution, which cuDNN ran 1.4-2.9x faster
  // than the tiles on an H100 (ResNet-18's 1x1/2 downsample forwards, benchmarks/NOTES.md 21),
  // as on the CPU (entry 20). FULLCONV_CUDA_ALGORITHM other than auto keeps fullconv's kernels.
  if (residual == nullptr && s.kernel_volume() == 1 && cuda_algorithm() == "auto" && input.numel() > 0)
    return one_tap_convolution(input, weight, bias, s, stride, dilation, groups);
  const bool batched = input.dim() == weight.dim();
  at::Tensor res;
  if (residual != nullptr) {
    check_residual(*residual, output_shape(s, batched), residual_padding, input, op_name);
    res = (batched ? *residual : residual->unsqueeze(0)).contiguous();
  }
  const auto xb = batched ? input : input.unsqueeze(0);
  const auto w = weight.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const auto b = has_bias ? bias->contiguous() : at::Tensor();
  const auto dtype = launcher_dtype(xb.scalar_type());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const bool tiled = use_igemm(s, xb.scalar_type(), Pass::kForward);
  const auto x_cl = tiled && channels_last_pass(xb.scalar_type(), s, Pass::kForward) ? channels_last_copy(xb)
                                                                                      : at::Tensor();
  const auto x = x_cl.defined() ? x_cl : xb.contiguous();
  // The output's layout (F.convNd's rule); the channels-last kernel writes it directly.
  const auto out_format = output_memory_format(input, weight);
  cuda::IgemmLayout layout;
  layout.src_channels_last = x_cl.defined();
  layout.dst_channels_last = x_cl.defined() && out_format != at::MemoryFormat::Contiguous;
  layout.row_regions = row_regions();
  layout.tiles = tiles_for(xb.scalar_type(), s, Pass::kForward);
  auto y = at::empty(output_shape(s, true), xb.options().memory_format(
                                                layout.dst_channels_last ? out_format : at::MemoryFormat::Contiguous));
  const auto epilogue = make_epilogue(residual ? &res : nullptr, y.sizes(), residual_padding, relu);
  // One pass over the weight: the tiled kernels' packed copy, and per output channel whether
  // any weight holds inf/nan (device-side, no host sync).
  const auto nonfinite = at::empty({s.out_channels}, x.options().dtype(at::kByte));
  const auto packed = tiled ? at::empty_like(w) : at::Tensor();
  check_launch(cuda::prepare_weight(dtype, w.const_data_ptr(), s, Pass::kForward,
                                    tiled ? packed.mutable_data_ptr() : nullptr, nonfinite.mutable_data_ptr<uint8_t>(),
                                    stream),
               "weight preparation");
  if (tiled) {
    check_launch(cuda::forward_igemm(dtype, use_tf32(x.scalar_type()), layout, x.const_data_ptr(),
                                     packed.const_data_ptr(),
                                     w.const_data_ptr(), has_bias ? b.const_data_ptr() : nullptr,
                                     nonfinite.const_data_ptr<uint8_t>(), epilogue, y.mutable_data_ptr(), s, stream),
                 "forward (implicit GEMM)");
  } else {
    check_launch(cuda::forward_epilogue(dtype, x.const_data_ptr(), w.const_data_ptr(),
                                        has_bias ? b.const_data_ptr() : nullptr,
                                        nonfinite.const_data_ptr<uint8_t>(), epilogue, y.mutable_data_ptr(), s,
                                        stream, direct_kernels()),
                 "forward");
  }
  if (!batched) y = y.squeeze(0);
  return y.contiguous(out_format);
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
  // One tap: an ordinary convolution's backward, as for the forward. cuDNN's was 2-5x faster
  // than the tiles' grad_input and mostly faster for grad_weight on ResNet-50's 1x1 layers
  // (H200, benchmarks/NOTES.md 23).
  if (s.kernel_volume() == 1 && cuda_algorithm() == "auto" && input.numel() > 0 && grad_output.numel() > 0)
    return one_tap_backward(grad_output, input, weight, s, stride, dilation, groups, output_mask);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto dtype = launcher_dtype(input.scalar_type());
  const auto gyb = batched ? grad_output : grad_output.unsqueeze(0);
  // grad_out as (N, C, *spatial), made only for the passes that read that layout
  at::Tensor gy_contiguous;
  auto gy = [&]() -> const at::Tensor& {
    if (!gy_contiguous.defined()) gy_contiguous = gyb.contiguous();
    return gy_contiguous;
  };
  const auto options = gyb.options();
  at::Tensor grad_input = at::empty({0}, input.options());
  at::Tensor grad_weight = at::empty({0}, input.options());
  at::Tensor grad_bias = at::empty({0}, input.options());
  if (output_mask[2]) grad_bias = grad_bias_from(gyb, input.scalar_type());
  // grad_out's channels-last copy, made at most once for grad_input and grad_weight
  at::Tensor gy_channels_last;
  auto gy_cl = [&]() -> const at::Tensor& {
    if (!gy_channels_last.defined()) gy_channels_last = channels_last_copy(gyb);
    return gy_channels_last;
  };
  if (output_mask[0]) {
    auto gx = at::empty({s.batch, s.in_channels, s.in_spatial()}, options);
    if (use_igemm(s, input.scalar_type(), Pass::kGradInput)) {
      const auto w = weight.contiguous();
      const auto packed = at::empty_like(w);
      check_launch(cuda::prepare_weight(dtype, w.const_data_ptr(), s, Pass::kGradInput, packed.mutable_data_ptr(),
                                        nullptr, stream),
                   "weight preparation");
      const bool cl = channels_last_pass(input.scalar_type(), s, Pass::kGradInput);
      // grad_input takes the input's layout; the channels-last kernel writes a channels-last one directly
      const auto in_format = batched ? input.suggest_memory_format() : at::MemoryFormat::Contiguous;
      cuda::IgemmLayout layout;
      layout.src_channels_last = cl;
      layout.dst_channels_last = cl && in_format != at::MemoryFormat::Contiguous;
      layout.tiles = tiles_for(input.scalar_type(), s, Pass::kGradInput);
      if (layout.dst_channels_last) gx = at::empty(input.sizes(), options.memory_format(in_format));
      check_launch(cuda::grad_input_igemm(dtype, use_tf32(input.scalar_type()), layout,
                                          (cl ? gy_cl() : gy()).const_data_ptr(), packed.const_data_ptr(),
                                          gx.mutable_data_ptr(), s, stream),
                   "grad_input (implicit GEMM)");
    } else {
      check_launch(cuda::grad_input(dtype, gy().const_data_ptr(), weight.contiguous().const_data_ptr(),
                                    gx.mutable_data_ptr(), s, stream, direct_kernels()),
                   "grad_input");
    }
    grad_input = finish_grad_input(gx, input, batched);
  }
  if (output_mask[1]) {
    const auto xb = batched ? input : input.unsqueeze(0);
    auto gw = at::empty(weight.sizes(), options);
    // Few input channels (RGB stems): the direct register-blocked grad_weight where it takes the
    // problem, under direct always, under auto where few_inputs_direct says so or the tiles do
    // not take it (one input channel and fewer than 32 output channels; 16-bit dtypes without
    // usable tensor cores: the alternative there is one block per weight element).
    // FULLCONV_CUDA_DIRECT=element: the choice below, as before.
    const std::string algorithm = cuda_algorithm();
    const bool few_inputs =
        input.numel() > 0 && grad_output.numel() > 0 && s.in_channels_per_group() <= 4 &&
        direct_kernels() == cuda::DirectKernels::kBlocked &&
        (algorithm == "direct" ||
         (algorithm == "auto" && (few_inputs_direct(input.scalar_type(), s, Pass::kGradWeight) ||
                                  !use_igemm(s, input.scalar_type(), Pass::kGradWeight))));
    const int blocked_sms = few_inputs ? device_attribute(cudaDevAttrMultiProcessorCount) : 0;
    const size_t blocked_bytes = few_inputs ? cuda::grad_weight_blocked_workspace(dtype, s, blocked_sms) : 0;
    if (blocked_bytes > 0) {
      const auto workspace = at::empty({static_cast<int64_t>(blocked_bytes)}, options.dtype(at::kByte));
      const auto x = xb.contiguous();
      check_launch(cuda::grad_weight_blocked(dtype, gy().const_data_ptr(), x.const_data_ptr(), gw.mutable_data_ptr(),
                                             workspace.mutable_data_ptr(), s, blocked_sms, stream),
                   "grad_weight (direct, blocked)");
    } else if (use_igemm(s, input.scalar_type(), Pass::kGradWeight)) {
      const bool tf32 = use_tf32(input.scalar_type());
      const int sm_count = device_attribute(cudaDevAttrMultiProcessorCount);
      const bool cl = channels_last_pass(input.scalar_type(), s, Pass::kGradWeight);
      const auto tiles = cl ? tiles_for(input.scalar_type(), s, Pass::kGradWeight) : cuda::Tiles::kBase;
      const size_t bytes = cuda::grad_weight_igemm_workspace(dtype, tf32, tiles, s, sm_count);
      const auto workspace = at::empty({static_cast<int64_t>(bytes)}, options.dtype(at::kByte));
      const auto x = cl ? channels_last_copy(xb) : xb.contiguous();
      check_launch(cuda::grad_weight_igemm(dtype, tf32, cl, tiles, (cl ? gy_cl() : gy()).const_data_ptr(),
                                           x.const_data_ptr(),
                                           gw.mutable_data_ptr(), bytes > 0 ? workspace.mutable_data_ptr() : nullptr,
                                           s, sm_count, stream),
                   "grad_weight (implicit GEMM)");
    } else {
      const auto x = xb.contiguous();
      check_launch(cuda::grad_weight(dtype, gy().const_data_ptr(), x.const_data_ptr(),
                                     gw.mutable_data_ptr(), s, stream),
                   "grad_weight");
    }
    grad_weight = gw.contiguous(weight.suggest_memory_format());
  }
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace
}  // namespace fullconv

// Whether this build holds the sm_90a wgmma kernels (TORCH_CUDA_ARCH_LIST with 9.0a), for the
// tests that expect FULLCONV_CUDA_TILES=wgmma to run them on a compute-capability-9.0 device.
TORCH_LIBRARY_FRAGMENT(fullconv, m) {
  m.def("_cuda_wgmma_built() -> bool", []() { return fullconv::cuda::wgmma_kernels_built(); });
}

TORCH_LIBRARY_IMPL(fullconv, CUDA, m) {
  m.impl("full_conv", &fullconv::full_conv_cuda);
  m.impl("full_conv_backward", &fullconv::full_conv_backward_cuda);
  m.impl("full_conv_residual", &fullconv::full_conv_residual_cuda);
  m.impl("padded_add", &fullconv::padded_add_cuda);
}
