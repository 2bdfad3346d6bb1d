// The tiled kernels of one ResNet-18 layer without torch, for Nsight Compute's per-instruction
// counters: a GPU machine can run it (and `ncu --section SourceCounters`) seconds after it
// starts, with no extension build there. Built against the torch-free launchers
// (csrc/cuda/full_conv_cuda.h):
//
//   nvcc -std=c++17 -O3 -lineinfo -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr \
//        -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
//        -I csrc benchmarks/cuda_profile_standalone.cpp csrc/cuda/*.cu -o cuda_profile_standalone
//   ncu --section SourceCounters --section InstructionStats --kernel-name regex:gemm \
//       --profile-from-start off -o report ./cuda_profile_standalone
//
// Runs ResNet-18 layer 1's 3x3 convolution (64 -> 64 channels, 56x56, batch 32) as a full
// convolution in float16, channels-last: forward, grad_input and grad_weight on the WMMA (base)
// and mma.sync tiles (mma-narrow, mma-wide), each once unprofiled and once between
// cudaProfilerStart/Stop, and prints each launch's time (CUDA events, median of 20) beside its
// label. Inputs are random; the
// results are checked elsewhere (tests, benchmarks/cuda_profile.py), not here.
#include <cuda_profiler_api.h>

#include <cstring>

#include "cuda/full_conv_cuda.h"
#include "cuda_standalone.h"

namespace fc = fullconv::cuda;

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  fullconv::ConvShape s;
  s.ndim = 2;
  s.batch = quick ? 2 : 32;
  s.in_channels = quick ? 16 : 64;
  s.out_channels = quick ? 16 : 64;
  s.groups = 1;
  const int64_t hw = quick ? 8 : 56;
  s.in_size[1] = s.in_size[2] = hw;
  s.kernel[1] = s.kernel[2] = 3;
  s.compute_output_size();
  const size_t nx = size_t(s.batch) * s.in_channels * s.in_spatial();
  const size_t ny = size_t(s.batch) * s.out_channels * s.out_spatial();
  const size_t nw = size_t(s.out_channels) * s.in_channels * s.kernel_volume();
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs; N=%lld C=%lld K=%lld %lldx%lld, 3x3, float16 channels-last\n", prop.name, sms,
              (long long)s.batch, (long long)s.in_channels, (long long)s.out_channels, (long long)hw, (long long)hw);

  std::mt19937 gen(0);
  // channels-last buffers: the launchers read (N, *spatial, C) when the layout says so
  void* x = random_half(nx, 1.0f, gen);
  void* gy = random_half(ny, 1.0f, gen);
  void* w = random_half(nw, 1.0f / 24.0f, gen);
  void *y, *gx, *gw, *packed_f, *packed_g, *nonfinite;
  CHECK(cudaMalloc(&y, ny * sizeof(__half)));
  CHECK(cudaMalloc(&gx, nx * sizeof(__half)));
  CHECK(cudaMalloc(&gw, nw * sizeof(__half)));
  CHECK(cudaMalloc(&packed_f, nw * sizeof(__half)));
  CHECK(cudaMalloc(&packed_g, nw * sizeof(__half)));
  CHECK(cudaMalloc(&nonfinite, size_t(s.out_channels)));
  const auto dt = fc::DType::kFloat16;
  CHECK(fc::prepare_weight(dt, w, s, fc::GemmPass::kForward, packed_f, static_cast<unsigned char*>(nonfinite), 0));
  CHECK(fc::prepare_weight(dt, w, s, fc::GemmPass::kGradInput, packed_g, nullptr, 0));
  CHECK(cudaDeviceSynchronize());

  for (auto pass : {fc::GemmPass::kForward, fc::GemmPass::kGradInput, fc::GemmPass::kGradWeight}) {
    if (!fc::igemm_channels_last_ok(dt, false, s, pass)) {
      std::fprintf(stderr, "channels-last kernels do not take this shape\n");
      return 1;
    }
  }
  const struct {
    fc::Tiles tiles;
    const char* name;
  } kinds[] = {{fc::Tiles::kBase, "base"}, {fc::Tiles::kMmaNarrow, "mma-narrow"}, {fc::Tiles::kMmaWide, "mma-wide"}};
  const double flop = 2.0 * double(s.batch) * s.out_channels * s.in_channels * s.kernel_volume() * double(s.in_spatial());
  for (const auto& kind : kinds) {
    fc::IgemmLayout layout;
    layout.src_channels_last = layout.dst_channels_last = true;
    layout.tiles = kind.tiles;
    const size_t ws = fc::grad_weight_igemm_workspace(dt, false, kind.tiles, s, sms);
    void* workspace = nullptr;
    if (ws) CHECK(cudaMalloc(&workspace, ws));
    const struct {
      const char* name;
      std::function<void()> run;
    } passes[] = {
        {"forward", [&] { CHECK(fc::forward_igemm(dt, false, layout, x, packed_f, w, nullptr,
                                                  static_cast<unsigned char*>(nonfinite), fc::Epilogue{}, y, s, 0)); }},
        {"grad_input", [&] { CHECK(fc::grad_input_igemm(dt, false, layout, gy, packed_g, gx, s, 0)); }},
        {"grad_weight", [&] { CHECK(fc::grad_weight_igemm(dt, false, true, kind.tiles, gy, x, gw, workspace, s, sms, 0)); }},
    };
    for (const auto& p : passes) {
      p.run();
      CHECK(cudaDeviceSynchronize());
      std::printf("== profiled next: float16 %s tiles=%s\n", p.name, kind.name);
      std::fflush(stdout);
      CHECK(cudaProfilerStart());
      p.run();
      CHECK(cudaDeviceSynchronize());
      CHECK(cudaProfilerStop());
      const float ms = median_ms(p.run, 20);
      std::printf("   %s tiles=%s: %.1f us median of 20, %.1f useful TFLOP/s\n", p.name, kind.name, ms * 1e3,
                  flop / (ms * 1e-3) / 1e12);
    }
    if (workspace) CHECK(cudaFree(workspace));
  }
  std::printf("cuda_profile_standalone: done\n");
  return 0;
}
