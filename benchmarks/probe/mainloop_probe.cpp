// Where the channels-last tiles' main loop spends its time: each kernel timed whole, without
// its copies into the shared-memory ring (math on whatever the stages hold) and without its
// math (copies only) and without its main loop (the tile's setup and epilogue alone), from four
// builds of the same float16 kernels (mainloop_probe_unit.cu, FULLCONV_IGEMM_PROBE 0/1/2/3). If
// the time without copies is close to the whole, the math side (ldmatrix, mma.sync, barriers,
// the per-chunk instructions) binds; if the time without math is, the copies (the L2 -> shared
// memory path) do; the fixed per-tile work (setup: row decode, tap table; epilogue) is in all
// of them and alone in the last column. Torch-free; build and run with benchmarks/probe/mainloop_probe.sh on a GPU.
// Inputs are random, results are not checked (two of the builds compute nothing meaningful;
// the kernels themselves are checked by the test suite).
#include <string>

#include "../cuda_standalone.h"
#include "cuda/implicit_gemm_entry.h"

namespace fullconv {
namespace cuda {
FULLCONV_IGEMM_DECLARE_ENTRY_POINTS(probe_full)
FULLCONV_IGEMM_DECLARE_ENTRY_POINTS(probe_no_copy)
FULLCONV_IGEMM_DECLARE_ENTRY_POINTS(probe_no_math)
FULLCONV_IGEMM_DECLARE_ENTRY_POINTS(probe_no_loop)
}  // namespace cuda
}  // namespace fullconv

namespace fc = fullconv::cuda;

struct Layer {
  const char* name;
  int64_t n, c, k, hw, ks;
};

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  const int reps = quick ? 3 : 20;
  const Layer layers[] = {
      {"gemm core 1x1", 64, 1024, 1024, 14, 1},
      {"rn18 layer1 3x3", 64, 64, 64, 56, 3},
      {"rn18 layer3 3x3", 64, 256, 256, 14, 3},
      {"rn18 layer4 3x3", 64, 512, 512, 7, 3},
  };
  const Layer quick_layers[] = {{"quick 3x3", 2, 64, 136, 8, 3}};
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("# mainloop probe on %s (%d SMs): float16, channels-last, median of %d launches (ms)\n", prop.name,
              sms, reps);
  std::printf("%-18s %-12s %-11s %9s %9s %9s %9s  %s\n", "layer", "pass", "tiles", "whole", "no copy", "no math",
              "no loop", "useful TFLOP/s (whole)");
  std::mt19937 gen(0);
  const auto dt = fc::DType::kFloat16;
  for (const Layer& l : quick ? std::vector<Layer>(std::begin(quick_layers), std::end(quick_layers))
                              : std::vector<Layer>(std::begin(layers), std::end(layers))) {
    fullconv::ConvShape s;
    s.ndim = 2;
    s.batch = l.n;
    s.in_channels = l.c;
    s.out_channels = l.k;
    s.groups = 1;
    s.in_size[1] = s.in_size[2] = l.hw;
    s.kernel[1] = s.kernel[2] = l.ks;
    s.compute_output_size();
    const size_t nx = size_t(s.batch) * s.in_channels * s.in_spatial();
    const size_t ny = size_t(s.batch) * s.out_channels * s.out_spatial();
    const size_t nw = size_t(s.out_channels) * s.in_channels * s.kernel_volume();
    void* x = random_half(nx, 1.0f, gen);
    void* gy = random_half(ny, 1.0f, gen);
    void* w = random_half(nw, 0.05f, gen);
    void *y, *gw, *packed, *nonfinite;
    CHECK(cudaMalloc(&y, ny * sizeof(__half)));
    CHECK(cudaMalloc(&gw, nw * sizeof(__half)));
    CHECK(cudaMalloc(&packed, nw * sizeof(__half)));
    CHECK(cudaMalloc(&nonfinite, size_t(s.out_channels)));
    CHECK(fc::probe_full::prepare_weight(dt, w, s, fc::GemmPass::kForward, packed,
                                         static_cast<unsigned char*>(nonfinite), 0));
    // every real product of the full convolution (each input element meets every tap)
    const double flop = 2.0 * double(s.batch) * s.out_channels * s.in_channels * s.kernel_volume() * s.in_spatial();
    for (const auto& kind : {std::make_pair(fc::Tiles::kMmaNarrow, "mma-narrow"),
                             std::make_pair(fc::Tiles::kMmaWide, "mma-wide")}) {
      fc::IgemmLayout layout;
      layout.src_channels_last = layout.dst_channels_last = true;
      layout.tiles = kind.first;
      const size_t ws = fc::probe_full::grad_weight_igemm_workspace(dt, false, kind.first, s, sms);
      void* workspace = nullptr;
      if (ws) CHECK(cudaMalloc(&workspace, ws));
      float t[2][4];
      for (int mode = 0; mode < 4; ++mode) {
        auto forward = [&] {
          switch (mode) {
            case 0: CHECK(fc::probe_full::forward_igemm(dt, false, layout, x, packed, w, nullptr,
                                                        static_cast<unsigned char*>(nonfinite), fc::Epilogue{}, y, s, 0));
                    break;
            case 1: CHECK(fc::probe_no_copy::forward_igemm(dt, false, layout, x, packed, w, nullptr,
                                                           static_cast<unsigned char*>(nonfinite), fc::Epilogue{}, y, s,
                                                           0));
                    break;
            case 2: CHECK(fc::probe_no_math::forward_igemm(dt, false, layout, x, packed, w, nullptr,
                                                           static_cast<unsigned char*>(nonfinite), fc::Epilogue{}, y,
                                                           s, 0));
                    break;
            default: CHECK(fc::probe_no_loop::forward_igemm(dt, false, layout, x, packed, w, nullptr,
                                                            static_cast<unsigned char*>(nonfinite), fc::Epilogue{}, y,
                                                            s, 0));
          }
        };
        auto grad_weight = [&] {
          switch (mode) {
            case 0: CHECK(fc::probe_full::grad_weight_igemm(dt, false, true, kind.first, gy, x, gw, workspace, s, sms, 0));
                    break;
            case 1: CHECK(fc::probe_no_copy::grad_weight_igemm(dt, false, true, kind.first, gy, x, gw, workspace, s,
                                                               sms, 0));
                    break;
            case 2: CHECK(fc::probe_no_math::grad_weight_igemm(dt, false, true, kind.first, gy, x, gw, workspace, s,
                                                               sms, 0));
                    break;
            default: CHECK(fc::probe_no_loop::grad_weight_igemm(dt, false, true, kind.first, gy, x, gw, workspace, s,
                                                                sms, 0));
          }
        };
        forward();  // (warm-up)
        grad_weight();
        CHECK(cudaDeviceSynchronize());
        t[0][mode] = median_ms(forward, reps);
        t[1][mode] = median_ms(grad_weight, reps);
      }
      const char* passes[] = {"forward", "grad_weight"};
      for (int p = 0; p < 2; ++p)
        std::printf("%-18s %-12s %-11s %9.3f %9.3f %9.3f %9.3f  %.1f\n", l.name, passes[p], kind.second, t[p][0],
                    t[p][1], t[p][2], t[p][3], flop / (t[p][0] * 1e-3) / 1e12);
      std::fflush(stdout);
      if (workspace) CHECK(cudaFree(workspace));
    }
    for (void* p : {x, gy, w, y, gw, packed, nonfinite}) CHECK(cudaFree(p));
  }
  std::printf("mainloop_probe: done\n");
  return 0;
}
