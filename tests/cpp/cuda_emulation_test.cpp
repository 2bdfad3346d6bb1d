// fullconv's CUDA kernels run on the host through the emulation of cuda_emulation.h: the
// launchers of csrc/cuda/full_conv_cuda.h (tiled implicit GEMM and direct), every dtype
// (float64, float32 on FMA and on TF32, float16, bfloat16), forward with bias and the fused
// residual + ReLU epilogue, grad_input, grad_weight with split-K, against the double
// reference of the definition on the same (rounded) values. Random 1-D/2-D/3-D problems with
// stride, dilation and groups, wide enough for several row and column tiles.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "conv_reference.h"
#include "cuda/full_conv_cuda.h"
#include "expect.h"

using fullconv::ConvShape;
namespace fc = fullconv::cuda;


template <typename T> T to_t(double v) { return static_cast<T>(v); }
template <> __half to_t<__half>(double v) { return __float2half_rn(static_cast<float>(v)); }
template <> __nv_bfloat16 to_t<__nv_bfloat16>(double v) { return __float2bfloat16_rn(static_cast<float>(v)); }
template <typename T> double to_d(T v) { return static_cast<double>(v); }
template <> double to_d<__half>(__half v) { return __half2float(v); }
template <> double to_d<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
std::vector<T> convert(std::vector<double>& v) {  // rounds v in place to what T holds
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    out[i] = to_t<T>(v[i]);
    v[i] = to_d(out[i]);
  }
  return out;
}

// Relative error against the reference's scale (max |ref|, at least 1).
template <typename T>
double rel_err(const std::vector<T>& got, const std::vector<double>& ref) {
  double scale = 1.0, err = 0.0;
  for (double r : ref) scale = std::fmax(scale, std::fabs(r));
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = std::fabs(to_d(got[i]) - ref[i]);
    err = std::isnan(d) ? INFINITY : std::fmax(err, d);
  }
  return err / scale;
}

// Forward [g][tap][ci][co] or grad_input [g][tap][co][ci] packing of w (Cout, Cin/g, taps).
template <typename T>
std::vector<T> pack(const std::vector<T>& w, const ConvShape& s, bool forward) {
  const int64_t cin_g = s.in_channels_per_group(), cout_g = s.out_channels_per_group(), taps = s.kernel_volume();
  std::vector<T> out(w.size());
  for (int64_t co = 0; co < s.out_channels; ++co)
    for (int64_t ci = 0; ci < cin_g; ++ci)
      for (int64_t k = 0; k < taps; ++k) {
        const int64_t g = co / cout_g, c = co % cout_g;
        out[forward ? ((g * taps + k) * cin_g + ci) * cout_g + c : ((g * taps + k) * cout_g + c) * cin_g + ci] =
            w[(co * cin_g + ci) * taps + k];
      }
  return out;
}

struct Config {
  fc::DType dtype;
  bool tf32;
  const char* name;
  double tol;
};

static long channels_last_weight_runs = 0;

// (N, C, sp) -> (N, sp, C), or back with to_channels_last false
template <typename T>
std::vector<T> permute_channels(const std::vector<T>& a, int64_t batch, int64_t channels, int64_t sp,
                                bool to_channels_last) {
  std::vector<T> out(a.size());
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t i = 0; i < sp; ++i) {
        const int64_t cf = (n * channels + c) * sp + i, cl = (n * sp + i) * channels + c;
        out[to_channels_last ? cl : cf] = a[to_channels_last ? cf : cl];
      }
  return out;
}

// The forward's row order for the next runs (regions, or plain order; IgemmLayout::row_regions).
static bool g_row_regions = true;
// The tiles of the float16/bfloat16 channels-last kernels (IgemmLayout::tiles).
static fc::Tiles g_tiles = fc::Tiles::kBase;
static long mma_tile_runs = 0, simt_wide_runs = 0;
// The direct family's passes the next runs check (1 forward, 2 grad_input, 4 grad_weight; its
// own cases skip the slowest to emulate, grad_weight, which runs on the random problems).
static int g_direct_passes = 7;
// The direct forward's and grad_input's kernels for the next runs (register-blocked, or one
// thread per element: the fallback for kernels too large for the blocked kernels' tables).
static fc::DirectKernels g_direct_kernels = fc::DirectKernels::kBlocked;
static long blocked_weight_runs = 0;

// channels_last (igemm only): every pass reads x and grad_out from channels-last copies (the
// cp.async kernels); dst_channels_last: forward and grad_input also write y and grad_in
// channels-last.
template <typename T>
void run(Problem P, const Config& cfg, bool igemm, bool channels_last, bool dst_channels_last, int sm_count,
         bool residual, bool relu, const std::string& what) {
  const ConvShape& s = P.s;
  std::mt19937 rng(static_cast<unsigned>(P.x.size() * 7 + P.w.size()));
  std::normal_distribution<double> normal;
  std::vector<double> bias(s.out_channels);
  for (auto& b : bias) b = normal(rng);
  const auto x = convert<T>(P.x), w = convert<T>(P.w), gy = convert<T>(P.gy), b = convert<T>(bias);
  std::vector<double> y_ref, gx_ref, gw_ref;
  reference(P, y_ref, gx_ref, gw_ref);
  const int64_t osp = s.out_spatial();
  // residual: (N, Cout, out - 2*pad) centred with pad 1 where the output allows it
  fc::Epilogue ep;
  std::vector<double> res;
  std::vector<T> res_t;
  if (residual) {
    int64_t rsp = 1;
    for (int i = 0; i < 3; ++i) {
      ep.pad[i] = s.out_size[i] > 2 ? 1 : 0;
      ep.res_size[i] = s.out_size[i] - 2 * ep.pad[i];
      rsp *= ep.res_size[i];
    }
    res.resize(s.batch * s.out_channels * rsp);
    for (auto& r : res) r = normal(rng);
    res_t = convert<T>(res);
    ep.residual = res_t.data();
  }
  ep.relu = relu;
  for (int64_t nc = 0; nc < s.batch * s.out_channels; ++nc)
    for (int64_t o = 0; o < osp; ++o) {
      double& v = y_ref[nc * osp + o];
      v += bias[nc % s.out_channels];
      const int64_t o2 = o % s.out_size[2], o1 = (o / s.out_size[2]) % s.out_size[1], o0 = o / (s.out_size[2] * s.out_size[1]);
      const int64_t r0 = o0 - ep.pad[0], r1 = o1 - ep.pad[1], r2 = o2 - ep.pad[2];
      if (residual && 0 <= r0 && r0 < ep.res_size[0] && 0 <= r1 && r1 < ep.res_size[1] && 0 <= r2 && r2 < ep.res_size[2])
        v += res[((nc * ep.res_size[0] + r0) * ep.res_size[1] + r1) * ep.res_size[2] + r2];
      if (relu && v < 0) v = 0;
    }
  // outputs start as NaN so an element never written shows up
  const T nan = to_t<T>(NAN);
  std::vector<T> y(y_ref.size(), nan), gx(gx_ref.size(), nan), gw(gw_ref.size(), nan);
  cudaError_t e1, e2, e3;
  if (igemm) {
    // the packing kernel against the host packing
    std::vector<T> wf(w.size()), wb(w.size());
    std::vector<unsigned char> flags(s.out_channels, 7);
    const cudaError_t ep1 = fc::prepare_weight(cfg.dtype, w.data(), s, fc::GemmPass::kForward, wf.data(), flags.data(), nullptr);
    const cudaError_t ep2 = fc::prepare_weight(cfg.dtype, w.data(), s, fc::GemmPass::kGradInput, wb.data(), nullptr, nullptr);
    const auto hf = pack(w, s, true), hb = pack(w, s, false);
    bool same = ep1 == cudaSuccess && ep2 == cudaSuccess;
    for (size_t i = 0; i < w.size(); ++i) same = same && to_d(wf[i]) == to_d(hf[i]) && to_d(wb[i]) == to_d(hb[i]);
    for (unsigned char f : flags) same = same && f == 0;
    EXPECT(same, "%s: prepare_weight differs from the host packing or flags a finite weight\n", what.c_str());
    if (channels_last) {
      EXPECT(fc::igemm_channels_last_ok(cfg.dtype, cfg.tf32, s, fc::GemmPass::kForward) &&
                 fc::igemm_channels_last_ok(cfg.dtype, cfg.tf32, s, fc::GemmPass::kGradInput),
             "%s: the channels-last kernel does not take this problem\n", what.c_str());
      const auto x_cl = permute_channels(x, s.batch, s.in_channels, s.in_spatial(), true);
      const auto gy_cl = permute_channels(gy, s.batch, s.out_channels, s.out_spatial(), true);
      fc::IgemmLayout layout;
      layout.src_channels_last = true;
      layout.dst_channels_last = dst_channels_last;
      layout.row_regions = g_row_regions;
      layout.tiles = g_tiles;
      mma_tile_runs += g_tiles != fc::Tiles::kBase && (cfg.dtype == fc::DType::kFloat16 || cfg.dtype == fc::DType::kBFloat16);
      e1 = fc::forward_igemm(cfg.dtype, cfg.tf32, layout, x_cl.data(), wf.data(), w.data(), b.data(), nullptr, ep,
                             y.data(), s, nullptr);
      e2 = fc::grad_input_igemm(cfg.dtype, cfg.tf32, layout, gy_cl.data(), wb.data(), gx.data(), s, nullptr);
      if (dst_channels_last) {
        y = permute_channels(y, s.batch, s.out_channels, s.out_spatial(), false);
        gx = permute_channels(gx, s.batch, s.in_channels, s.in_spatial(), false);
      }
    } else {
      fc::IgemmLayout layout;
      layout.row_regions = g_row_regions;
      layout.tiles = g_tiles;
      simt_wide_runs += g_tiles == fc::Tiles::kSimtWide && cfg.dtype == fc::DType::kFloat32 && !cfg.tf32;
      e1 = fc::forward_igemm(cfg.dtype, cfg.tf32, layout, x.data(), wf.data(), w.data(), b.data(), nullptr, ep,
                             y.data(), s, nullptr);
      fc::IgemmLayout gx_layout;
      gx_layout.tiles = g_tiles;
      e2 = fc::grad_input_igemm(cfg.dtype, cfg.tf32, gx_layout, gy.data(), wb.data(), gx.data(), s, nullptr);
    }
    // (few input channels per group take the flat grad_weight, which reads the usual layout)
    const bool cl_weight = channels_last && fc::igemm_channels_last_ok(cfg.dtype, cfg.tf32, s, fc::GemmPass::kGradWeight);
    const fc::Tiles tiles = cl_weight ? g_tiles : fc::Tiles::kBase;
    const size_t bytes = fc::grad_weight_igemm_workspace(cfg.dtype, cfg.tf32, tiles, s, sm_count);
    std::vector<double> workspace(bytes / sizeof(double) + 1, NAN);  // NaN: unwritten partial sums show
    if (cl_weight) {
      ++channels_last_weight_runs;
      const auto x_cl = permute_channels(x, s.batch, s.in_channels, s.in_spatial(), true);
      const auto gy_cl = permute_channels(gy, s.batch, s.out_channels, s.out_spatial(), true);
      e3 = fc::grad_weight_igemm(cfg.dtype, cfg.tf32, true, tiles, gy_cl.data(), x_cl.data(), gw.data(),
                                 bytes ? workspace.data() : nullptr, s, sm_count, nullptr);
    } else {
      e3 = fc::grad_weight_igemm(cfg.dtype, cfg.tf32, false, fc::Tiles::kBase, gy.data(), x.data(), gw.data(),
                                 bytes ? workspace.data() : nullptr, s, sm_count, nullptr);
    }
  } else {
    e1 = e2 = e3 = cudaSuccess;
    if (g_direct_passes & 1)
      e1 = fc::forward_epilogue(cfg.dtype, x.data(), w.data(), b.data(), nullptr, ep, y.data(), s, nullptr,
                                g_direct_kernels);
    if (g_direct_passes & 2)
      e2 = fc::grad_input(cfg.dtype, gy.data(), w.data(), gx.data(), s, nullptr, g_direct_kernels);
    if (g_direct_passes & 4) {
      // (few input channels: the register-blocked grad_weight, its slices' partial sums in a
      // workspace that starts as NaN, so an unwritten partial shows)
      const size_t bytes = g_direct_kernels == fc::DirectKernels::kBlocked
                               ? fc::grad_weight_blocked_workspace(cfg.dtype, s, sm_count)
                               : 0;
      if (bytes > 0) {
        std::vector<double> workspace(bytes / sizeof(double) + 1, NAN);
        e3 = fc::grad_weight_blocked(cfg.dtype, gy.data(), x.data(), gw.data(), workspace.data(), s, sm_count, nullptr);
        ++blocked_weight_runs;
      } else {
        e3 = fc::grad_weight(cfg.dtype, gy.data(), x.data(), gw.data(), s, nullptr);
      }
    }
  }
  EXPECT(e1 == cudaSuccess && e2 == cudaSuccess && e3 == cudaSuccess, "%s: launch error %d %d %d\n", what.c_str(),
         int(e1), int(e2), int(e3));
  const int checked = igemm ? 7 : g_direct_passes;
  const double ey = checked & 1 ? rel_err(y, y_ref) : 0.0, ex = checked & 2 ? rel_err(gx, gx_ref) : 0.0,
               ew = checked & 4 ? rel_err(gw, gw_ref) : 0.0;
  EXPECT(ey <= cfg.tol, "%s: forward rel. error %g > %g\n", what.c_str(), ey, cfg.tol);
  EXPECT(ex <= cfg.tol, "%s: grad_input rel. error %g > %g\n", what.c_str(), ex, cfg.tol);
  EXPECT(ew <= cfg.tol, "%s: grad_weight rel. error %g > %g\n", what.c_str(), ew, cfg.tol);
}

void run_any(const Problem& P, const Config& cfg, bool igemm, int sm_count, bool residual, bool relu,
             const std::string& what, bool channels_last = false, bool dst_cl = false) {
  switch (cfg.dtype) {
    case fc::DType::kFloat64: return run<double>(P, cfg, igemm, channels_last, dst_cl, sm_count, residual, relu, what);
    case fc::DType::kFloat32: return run<float>(P, cfg, igemm, channels_last, dst_cl, sm_count, residual, relu, what);
    case fc::DType::kFloat16: return run<__half>(P, cfg, igemm, channels_last, dst_cl, sm_count, residual, relu, what);
    case fc::DType::kBFloat16:
      return run<__nv_bfloat16>(P, cfg, igemm, channels_last, dst_cl, sm_count, residual, relu, what);
  }
}

// wide: channel counts that fill several 64-column tiles; long: reductions long enough for
// split-K (grad_weight) and many row tiles; vectors: channels per group in whole 16-byte
// vectors of every dtype and enough of them for tap-major chunks (the channels-last kernel).
Problem random_problem(std::mt19937& rng, int nd, bool wide, bool long_rows = false, bool vectors = false) {
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::normal_distribution<double> normal;
  Problem P;
  ConvShape& s = P.s;
  s.ndim = nd;
  s.batch = uni(1, 2);
  s.groups = uni(1, 2);
  const int widths[] = {1, 3, 8, 17, 33, 70};
  const int vector_widths[] = {24, 40, 64, 72, 136};
  s.in_channels = s.groups * (vectors ? vector_widths[uni(0, 4)] : wide ? widths[uni(2, 5)] : uni(1, 4));
  s.out_channels = s.groups * (vectors ? vector_widths[uni(0, 4)] : wide ? widths[uni(2, 5)] : uni(1, 4));
  for (int d = 3 - nd; d < 3; ++d) {
    s.in_size[d] = long_rows ? uni(nd == 1 ? 1000 : 24, nd == 1 ? 3000 : 40) : uni(1, nd == 1 ? 40 : nd == 2 ? 11 : 5);
    s.kernel[d] = uni(1, nd == 3 ? 3 : 4);
    s.stride[d] = uni(1, 2);
    s.dilation[d] = uni(1, 2);
  }
  s.compute_output_size();
  // keep each weight's reduction modest: the values stay O(1) for half precision
  const double scale = 1.0 / std::sqrt(double(s.in_channels_per_group() * s.kernel_volume()));
  P.x.resize(s.batch * s.in_channels * s.in_spatial());
  P.w.resize(s.out_channels * s.in_channels_per_group() * s.kernel_volume());
  P.gy.resize(s.batch * s.out_channels * s.out_spatial());
  for (auto& v : P.x) v = normal(rng);
  for (auto& v : P.w) v = normal(rng) * scale;
  for (auto& v : P.gy) v = normal(rng);
  return P;
}

// A weight holding inf: the padded reference multiplies it by padding zeros (nan) wherever the
// tap falls outside the input, by real inputs (+-inf, or nan for 0) inside. Both families,
// float32, against that padded reference in double (nan where it is nan, equal elsewhere).
// channels_last: float16 through the channels-last tiles (x read channels-last, y written in
// either layout: dst_channels_last), whose epilogue keeps a fast path for tiles without
// flagged columns; else float32 through the FMA tiles (igemm) or the direct kernel.
void run_nonfinite(bool igemm, bool channels_last = false, bool dst_channels_last = false) {
  std::mt19937 rng(channels_last ? 101 + dst_channels_last : 99);
  Problem P = random_problem(rng, 2, true, false, channels_last);
  P.w[3] = INFINITY;  // output channel 0
  const ConvShape& s = P.s;
  const auto x = convert<float>(P.x), w = convert<float>(P.w);
  const int64_t cin_g = s.in_channels_per_group(), cout_g = s.out_channels_per_group(), taps = s.kernel_volume();
  std::vector<double> ref(s.batch * s.out_channels * s.out_spatial(), 0.0);
  int64_t o[3], k[3];
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t co = 0; co < s.out_channels; ++co)
      for (o[0] = 0; o[0] < s.out_size[0]; ++o[0])
        for (o[1] = 0; o[1] < s.out_size[1]; ++o[1])
          for (o[2] = 0; o[2] < s.out_size[2]; ++o[2]) {
            double acc = 0.0;
            for (int64_t ci = 0; ci < cin_g; ++ci)
              for (int64_t t = 0; t < taps; ++t) {
                k[0] = t / (s.kernel[1] * s.kernel[2]), k[1] = (t / s.kernel[2]) % s.kernel[1], k[2] = t % s.kernel[2];
                int64_t i[3];
                bool inside = true;
                for (int d = 0; d < 3; ++d) {
                  i[d] = o[d] * s.stride[d] + k[d] * s.dilation[d] - s.dilation[d] * (s.kernel[d] - 1);
                  inside = inside && 0 <= i[d] && i[d] < s.in_size[d];
                }
                const double xv = inside ? P.x[(n * s.in_channels + co / cout_g * cin_g + ci) * s.in_spatial() +
                                                flat3(s.in_size, i)]
                                         : 0.0;
                acc += P.w[(co * cin_g + ci) * taps + t] * xv;
              }
            ref[(n * s.out_channels + co) * s.out_spatial() + flat3(s.out_size, o)] = acc;
          }
  std::vector<unsigned char> flags(s.out_channels, 7);
  EXPECT(fc::prepare_weight(fc::DType::kFloat32, w.data(), s, fc::GemmPass::kForward, nullptr, flags.data(), nullptr) ==
             cudaSuccess && flags[0] == 1,
         "nonfinite: channel 0 not flagged\n");
  for (int64_t co = 1; co < s.out_channels; ++co) EXPECT(flags[co] == 0, "nonfinite: channel %ld flagged\n", (long)co);
  std::vector<float> y(ref.size(), 1234.5f);
  const fc::Epilogue ep;
  cudaError_t err;
  double tol = 1e-4;
  if (channels_last) {
    EXPECT(fc::igemm_channels_last_ok(fc::DType::kFloat16, false, s, fc::GemmPass::kForward),
           "nonfinite: the channels-last kernel does not take this problem\n");
    const auto xh = convert<__half>(P.x), wh = convert<__half>(P.w);
    const auto x_cl = permute_channels(xh, s.batch, s.in_channels, s.in_spatial(), true);
    const auto wf = pack(wh, s, true);
    fc::IgemmLayout layout;
    layout.src_channels_last = true;
    layout.dst_channels_last = dst_channels_last;
    std::vector<__half> yh(ref.size(), to_t<__half>(1234.5));
    err = fc::forward_igemm(fc::DType::kFloat16, false, layout, x_cl.data(), wf.data(), wh.data(), nullptr, flags.data(),
                            ep, yh.data(), s, nullptr);
    if (dst_channels_last) yh = permute_channels(yh, s.batch, s.out_channels, s.out_spatial(), false);
    for (size_t e = 0; e < y.size(); ++e) y[e] = float(to_d(yh[e]));
    tol = 1e-2;  // float16 operands and result
  } else if (igemm) {
    const auto wf = pack(w, s, true);
    err = fc::forward_igemm(fc::DType::kFloat32, false, fc::IgemmLayout(), x.data(), wf.data(), w.data(), nullptr, flags.data(), ep,
                            y.data(), s, nullptr);
  } else {
    err = fc::forward_epilogue(fc::DType::kFloat32, x.data(), w.data(), nullptr, flags.data(), ep, y.data(), s, nullptr,
                               g_direct_kernels);
  }
  EXPECT(err == cudaSuccess, "nonfinite: launch error\n");
  long mismatches = 0, nans = 0;
  for (size_t e = 0; e < ref.size(); ++e) {
    const bool ref_nan = std::isnan(ref[e]), got_nan = std::isnan(y[e]);
    nans += ref_nan;
    if (ref_nan != got_nan) ++mismatches;
    else if (!ref_nan && std::isinf(ref[e]) && ref[e] != y[e]) ++mismatches;
    else if (!ref_nan && !std::isinf(ref[e]) && std::fabs(ref[e] - y[e]) > tol * (1 + std::fabs(ref[e]))) ++mismatches;
  }
  EXPECT(mismatches == 0 && nans > 0, "nonfinite (%s): %ld of %zu elements differ from the padded reference (%ld nan)\n",
         channels_last ? (dst_channels_last ? "channels-last in and out" : "channels-last in") : igemm ? "igemm" : "direct",
         mismatches, ref.size(), nans);
}

// Normal random x, w (scaled by w_scale) and gy for a given shape.
Problem problem_of(const ConvShape& shape, double w_scale, std::mt19937& rng) {
  Problem P;
  P.s = shape;
  const ConvShape& s = P.s;
  std::normal_distribution<double> normal;
  P.x.resize(s.batch * s.in_channels * s.in_spatial());
  P.w.resize(s.out_channels * s.in_channels_per_group() * s.kernel_volume());
  P.gy.resize(s.batch * s.out_channels * s.out_spatial());
  for (auto* vec : {&P.x, &P.w, &P.gy})
    for (auto& e : *vec) e = normal(rng) * (vec == &P.w ? w_scale : 1.0);
  return P;
}

std::string describe(const Problem& P) {
  const ConvShape& s = P.s;
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%dD n=%ld %ld->%ld g=%ld in=%ldx%ldx%ld k=%ldx%ldx%ld s=%ldx%ldx%ld d=%ldx%ldx%ld",
                s.ndim, (long)s.batch, (long)s.in_channels, (long)s.out_channels, (long)s.groups, (long)s.in_size[0],
                (long)s.in_size[1], (long)s.in_size[2], (long)s.kernel[0], (long)s.kernel[1], (long)s.kernel[2],
                (long)s.stride[0], (long)s.stride[1], (long)s.stride[2], (long)s.dilation[0], (long)s.dilation[1],
                (long)s.dilation[2]);
  return buf;
}

int main(int argc, char** argv) {
  const int problems = argc > 1 ? std::atoi(argv[1]) : 12;
  // tolerances relative to the output's scale: accumulation in float32 (float64 for float64)
  // plus one rounding of the result to the dtype; TF32 also rounds both operands (10 bits)
  const Config configs[] = {
      {fc::DType::kFloat64, false, "float64", 1e-12},
      {fc::DType::kFloat32, false, "float32", 2e-6},
      {fc::DType::kFloat32, true, "float32-tf32", 4e-3},
      {fc::DType::kFloat16, false, "float16", 2e-3},
      {fc::DType::kBFloat16, false, "bfloat16", 1.2e-2},
  };
  std::mt19937 rng(2024);
  int runs = 0;
  for (int i = 0; i < problems; ++i) {
    const Problem wide = random_problem(rng, 1 + i % 3, true);
    const Problem narrow = random_problem(rng, 1 + (i + 1) % 3, false);
    const Problem long_rows = random_problem(rng, 1 + i % 2, i % 2 == 0, true);
    for (const Config& cfg : configs) {
      const bool residual = (i + runs) % 2 == 0, relu = (i + runs) % 3 == 0;
      // few SMs: split-K engages on these small problems; an H100's 132: mostly one slice
      const int sm_counts[] = {132, 1, 3, 132};
      const int sm_count = sm_counts[i % 4];
      run_any(wide, cfg, true, sm_count, residual, relu, std::string("igemm ") + cfg.name + " " + describe(wide));
      run_any(narrow, cfg, true, sm_count, !residual, relu, std::string("igemm ") + cfg.name + " " + describe(narrow));
      if (cfg.dtype == fc::DType::kFloat32 && !cfg.tf32) {  // the wide FMA tiles (forward, grad_input)
        g_tiles = fc::Tiles::kSimtWide;
        run_any(wide, cfg, true, sm_count, !residual, !relu,
                std::string("igemm wide FMA tiles ") + cfg.name + " " + describe(wide));
        g_tiles = fc::Tiles::kBase;
      }
      // (every other problem: the forward's rows in plain order, not by regions)
      g_row_regions = i % 2 == 0;
      run_any(long_rows, cfg, true, 132, residual, !relu,
              std::string("igemm ") + (g_row_regions ? "" : "plain rows ") + cfg.name + " " + describe(long_rows));
      g_row_regions = true;
      if (cfg.dtype != fc::DType::kFloat64 && (cfg.dtype != fc::DType::kFloat32 || cfg.tf32)) {
        // tensor-core dtypes: the channels-last kernel, short and long rows
        const Problem cl = random_problem(rng, 1 + i % 3, true, i % 4 == 3, true);
        const bool dst_cl = (i + runs) % 2 == 1;
        run_any(cl, cfg, true, sm_count, residual, relu,
                std::string("igemm channels-last ") + (dst_cl ? "in and out " : "in ") + cfg.name + " " + describe(cl),
                true, dst_cl);
        if (cfg.dtype == fc::DType::kFloat16 || cfg.dtype == fc::DType::kBFloat16) {  // again on mma.sync tiles
          const fc::Tiles kinds[] = {fc::Tiles::kMma, fc::Tiles::kMmaNarrow, fc::Tiles::kMmaWide, fc::Tiles::kWgmma,
                                     fc::Tiles::kWgmmaWide};
          const char* kind_names[] = {"mma tiles ", "narrow mma tiles ", "wide mma tiles ", "wgmma tiles ",
                                      "wide wgmma tiles "};
          g_tiles = kinds[i % 5];
          run_any(cl, cfg, true, sm_count, !residual, relu,
                  std::string("igemm channels-last ") + kind_names[i % 5] +
                      (dst_cl ? "in " : "in and out ") + cfg.name + " " + describe(cl),
                  true, !dst_cl);
          g_tiles = fc::Tiles::kBase;
        }
      }
      if (cfg.tf32) { ++runs; continue; }  // the direct kernels have no TF32 mode
      // (every other problem: the direct forward and grad_input one thread per element)
      g_direct_kernels = i % 2 == 0 ? fc::DirectKernels::kBlocked : fc::DirectKernels::kPerElement;
      run_any(narrow, cfg, false, sm_count, residual, !relu,
              std::string("direct ") + (i % 2 == 0 ? "" : "per element ") + cfg.name + " " + describe(narrow));
      g_direct_kernels = fc::DirectKernels::kBlocked;
      // (and on a wide problem now and then: grad_input's blocks of 8 input channels; the
      // direct kernels' one thread per element makes these the slowest runs to emulate)
      if (i % 4 == 0 && cfg.dtype == fc::DType::kFloat32)
        run_any(wide, cfg, false, sm_count, !residual, relu, std::string("direct ") + cfg.name + " " + describe(wide));
      ++runs;
    }
  }
  // Split-K with empty slices: along dim 1 the input (length 1) has no element in residue
  // class 1 of stride 2, so the taps of that class meet only padding (reduction length 0)
  // while the others reduce over ~3000 positions in many slices.
  // (Then with whole 16-byte vectors of channels, through the channels-last kernels, on few
  // SMs so that the vectors' positions are stepped across many slices.)
  for (const bool vectors : {false, true}) {
    ConvShape s;
    s.ndim = 2;
    s.batch = 2;
    s.in_channels = vectors ? 24 : 8;
    s.out_channels = vectors ? 72 : 70;
    s.in_size[1] = 1;
    s.in_size[2] = 1500;
    s.kernel[1] = s.kernel[2] = 3;
    s.stride[1] = 2;
    s.compute_output_size();
    const Problem P = problem_of(s, 0.1, rng);
    for (const Config& cfg : configs) {
      if (!vectors) {
        run_any(P, cfg, true, 132, false, false, std::string("igemm empty slices ") + cfg.name);
      } else if (cfg.dtype != fc::DType::kFloat64 && (cfg.dtype != fc::DType::kFloat32 || cfg.tf32)) {
        run_any(P, cfg, true, 3, false, false, std::string("igemm channels-last empty slices ") + cfg.name, true, true);
        if (cfg.dtype == fc::DType::kFloat16 || cfg.dtype == fc::DType::kBFloat16) {
          g_tiles = fc::Tiles::kMma;
          run_any(P, cfg, true, 3, false, false, std::string("igemm channels-last mma tiles empty slices ") + cfg.name,
                  true, false);
          g_tiles = fc::Tiles::kBase;
        }
      }
    }
  }
  // A larger kernel through the channels-last kernels' tap table: 9x9 (81 taps) with stride 2
  // along one dim, so that grad_input's residue classes leave dead entries among live ones;
  // border tiles skip taps. (More taps than the table holds, 256, go to the other tiles.)
  {
    ConvShape s;
    s.ndim = 2;
    s.batch = 1;
    s.in_channels = 24;
    s.out_channels = 40;
    s.in_size[1] = 7;
    s.in_size[2] = 19;
    s.kernel[1] = s.kernel[2] = 9;
    s.stride[2] = 2;
    s.compute_output_size();
    const Problem P = problem_of(s, 0.05, rng);
    ConvShape big = s;
    big.kernel[1] = big.kernel[2] = 17;  // 289 taps
    big.compute_output_size();
    EXPECT(!fc::igemm_channels_last_ok(fc::DType::kFloat16, false, big, fc::GemmPass::kForward) &&
               !fc::igemm_channels_last_ok(fc::DType::kFloat16, false, big, fc::GemmPass::kGradInput) &&
               fc::igemm_channels_last_ok(fc::DType::kFloat16, false, s, fc::GemmPass::kForward),
           "channels-last kernels: the tap table's limit is not where it should be\n");
    ConvShape wide = s;  // (64 channels: not the flat grad_weight)
    wide.in_channels = wide.out_channels = 64;
    ConvShape huge = wide;  // more than 2^30 output positions: the grad_weight cursor's 32 bits
    huge.in_size[1] = 32768;
    huge.in_size[2] = 65536;  // (stride 2 along this dim)
    huge.compute_output_size();
    EXPECT(!fc::igemm_channels_last_ok(fc::DType::kFloat16, false, huge, fc::GemmPass::kGradWeight) &&
               fc::igemm_channels_last_ok(fc::DType::kFloat16, false, wide, fc::GemmPass::kGradWeight),
           "channels-last grad_weight: the 32-bit position limit is not where it should be\n");
    for (const Config& cfg : configs) {
      if (cfg.dtype == fc::DType::kFloat64 || (cfg.dtype == fc::DType::kFloat32 && !cfg.tf32)) continue;
      run_any(P, cfg, true, 132, true, true, std::string("igemm channels-last 81 taps ") + cfg.name, true, true);
      if (cfg.dtype == fc::DType::kFloat16 || cfg.dtype == fc::DType::kBFloat16) {
        // (float16: the narrow tiles, bfloat16: the 256-row tiles)
        const bool wide = cfg.dtype == fc::DType::kBFloat16;
        g_tiles = wide ? fc::Tiles::kMmaWide : fc::Tiles::kMmaNarrow;
        run_any(P, cfg, true, 132, false, false,
                std::string("igemm channels-last ") + (wide ? "wide " : "") + "mma tiles 81 taps " + cfg.name, true,
                false);
        g_tiles = fc::Tiles::kBase;
      }
    }
  }
  // The 256-row mma.sync tiles (kMmaWide) on more than 64 columns, where they take 256 x 128
  // tiles of 64 x 64 per warp: 286 rows (a partial second row tile) and 136 output channels (a
  // partial second column tile) in the forward, 72 columns in grad_input; dilation 2 along one
  // dim. Each dtype once with a residual and ReLU into NCHW, once into channels-last.
  {
    ConvShape s;
    s.ndim = 2;
    s.batch = 2;
    s.in_channels = 72;
    s.out_channels = 136;
    s.in_size[1] = 7;
    s.in_size[2] = 11;
    s.kernel[1] = s.kernel[2] = 3;
    s.dilation[1] = 2;
    s.compute_output_size();
    const Problem P = problem_of(s, 0.05, rng);
    for (const Config& cfg : configs) {
      if (cfg.dtype != fc::DType::kFloat16 && cfg.dtype != fc::DType::kBFloat16) continue;
      g_tiles = fc::Tiles::kMmaWide;
      for (const bool dst_cl : {false, true})
        run_any(P, cfg, true, 132, !dst_cl, !dst_cl,
                std::string("igemm channels-last wide mma tiles, 136 columns, ") + (dst_cl ? "in and out " : "in ") +
                    cfg.name,
                true, dst_cl);
      g_tiles = fc::Tiles::kBase;
    }
    // 264 output channels: grad_weight on 256-row tiles too (two row tiles, the second of 8
    // rows), 256 x 128 with 72 input channels, 256 x 64 with 40; 288 positions per tap (9
    // chunks): split into slices (a workspace is asked for)
    for (const int64_t cin : {72, 40}) {
      ConvShape s2 = s;
      s2.in_channels = cin;
      s2.out_channels = 264;
      s2.in_size[1] = s2.in_size[2] = 12;
      s2.dilation[1] = 1;
      s2.compute_output_size();
      EXPECT(fc::grad_weight_igemm_workspace(fc::DType::kFloat16, false, fc::Tiles::kMmaWide, s2, 132) > 0,
             "wide grad_weight tiles, %lld input channels: no split-K slices\n", (long long)cin);
      const Problem P2 = problem_of(s2, 0.05, rng);
      for (const Config& cfg : configs) {
        if (cfg.dtype != fc::DType::kFloat16 && cfg.dtype != fc::DType::kBFloat16) continue;
        g_tiles = fc::Tiles::kMmaWide;
        const long image0 = fullconv_emu::wide_image_launches, weight0 = fullconv_emu::wide_weight_launches;
        run_any(P2, cfg, true, 132, false, true,
                std::string("igemm channels-last wide mma tiles, 264 output channels, ") + std::to_string(cin) +
                    " input channels, " + cfg.name,
                true, true);
        EXPECT(fullconv_emu::wide_image_launches > image0 && fullconv_emu::wide_weight_launches > weight0,
               "wide mma tiles, %lld input channels: the 256-row kernels did not run\n", (long long)cin);
        g_tiles = fc::Tiles::kBase;
      }
      // A device of 99 KiB per block (sm_86/89): the 256 x 128 tiles give way to the mma tiles,
      // the 256 x 64 ones (grad_input and grad_weight of 40 input channels) still run.
      fullconv_emu::max_dynamic_smem_bytes = 99 * 1024;
      g_tiles = fc::Tiles::kMmaWide;
      const long image0 = fullconv_emu::wide_image_launches, weight0 = fullconv_emu::wide_weight_launches;
      run_any(P2, configs[3], true, 132, true, false,
              std::string("igemm channels-last wide mma tiles on 99 KiB, ") + std::to_string(cin) +
                  " input channels, " + configs[3].name,
              true, false);
      const bool narrow_cols = cin <= 64;
      EXPECT((fullconv_emu::wide_image_launches > image0) == narrow_cols &&
                 (fullconv_emu::wide_weight_launches > weight0) == narrow_cols,
             "wide mma tiles on 99 KiB, %lld input channels: wrong fallback\n", (long long)cin);
      fullconv_emu::max_dynamic_smem_bytes = 227 * 1024;
      g_tiles = fc::Tiles::kBase;
    }
  }
  // Hopper's wgmma tiles (kWgmma: 128 x 128, 64-deep chunks, four stages, operands read through
  // the descriptors' swizzled layouts) on passes of more than 64 columns: 136 output channels
  // (a partial second column tile) and 200 input channels (four chunks per tap, the last of 8
  // channels, so stages are reused round the ring within a tap), 3x3 with dilation 2 along one
  // dim and stride 2 along the other (grad_input's residue classes), 283 output rows (a partial
  // row tile); residual and ReLU into NCHW, then channels-last; grad_input's 200 columns on
  // 128 x 128 and a partial tile. Then 72 channels each way on a device of 99 KiB per block,
  // where the wgmma tiles do not fit and the mma tiles take over.
  {
    ConvShape s;
    s.ndim = 2;
    s.batch = 1;
    s.in_channels = 200;
    s.out_channels = 136;
    s.in_size[1] = 9;
    s.in_size[2] = 25;
    s.kernel[1] = s.kernel[2] = 3;
    s.dilation[1] = 2;
    s.stride[2] = 2;
    s.compute_output_size();
    const Problem P = problem_of(s, 0.05, rng);
    for (const Config& cfg : configs) {
      if (cfg.dtype != fc::DType::kFloat16 && cfg.dtype != fc::DType::kBFloat16) continue;
      g_tiles = fc::Tiles::kWgmma;
      for (const bool dst_cl : {false, true}) {
        const long before = fullconv_emu::wgmma_image_launches;
        run_any(P, cfg, true, 132, !dst_cl, !dst_cl,
                std::string("igemm channels-last wgmma tiles, 200 -> 136 channels, ") + (dst_cl ? "in and out " : "in ") +
                    cfg.name,
                true, dst_cl);
        // the forward and grad_input's residue classes (stride 2: two)
        EXPECT(fullconv_emu::wgmma_image_launches == before + 3, "wgmma tiles: %ld launches, 3 expected\n",
               fullconv_emu::wgmma_image_launches - before);
      }
      g_tiles = fc::Tiles::kBase;
    }
    ConvShape small = s;
    small.in_channels = small.out_channels = 72;
    const Problem P2 = problem_of(small, 0.05, rng);
    fullconv_emu::max_dynamic_smem_bytes = 99 * 1024;
    g_tiles = fc::Tiles::kWgmma;
    const long before = fullconv_emu::wgmma_image_launches;
    run_any(P2, configs[3], true, 132, true, true, std::string("igemm channels-last wgmma tiles on 99 KiB ") +
            configs[3].name, true, false);
    EXPECT(fullconv_emu::wgmma_image_launches == before, "wgmma tiles ran on a device of 99 KiB per block\n");
    fullconv_emu::max_dynamic_smem_bytes = 227 * 1024;
    run_any(P2, configs[3], true, 132, false, true, std::string("igemm channels-last wgmma tiles, 72 channels ") +
            configs[3].name, true, true);
    EXPECT(fullconv_emu::wgmma_image_launches == before + 3, "wgmma tiles, 72 channels: %ld launches, 3 expected\n",
           fullconv_emu::wgmma_image_launches - before);
    // 32 reduction channels per tap are a flat reduction for 64-deep chunks, not for the mma
    // tiles' 32: those passes fall to the mma tiles (forward of 32 -> 136, grad_input of
    // 136 -> 32); 40 channels run the wgmma forward with a partial chunk per tap
    const int narrow[][3] = {{32, 136, 0}, {136, 32, 0}, {40, 136, 1}};
    for (const auto& c : narrow) {
      ConvShape t = s;
      t.in_channels = c[0];
      t.out_channels = c[1];
      const Problem P3 = problem_of(t, 0.05, rng);
      const long at = fullconv_emu::wgmma_image_launches;
      run_any(P3, configs[3], true, 132, false, false,
              std::string("igemm channels-last wgmma tiles, ") + std::to_string(c[0]) + " -> " + std::to_string(c[1]) +
                  " channels " + configs[3].name,
              true, false);
      EXPECT(fullconv_emu::wgmma_image_launches == at + c[2], "wgmma tiles, %d -> %d channels: %ld launches, %d expected\n",
             c[0], c[1], fullconv_emu::wgmma_image_launches - at, c[2]);
    }
    g_tiles = fc::Tiles::kBase;
    // 128 x 256 (kWgmmaWide): 200 -> 264 channels, the forward's 264 columns on a whole and a
    // partial column tile, grad_input's 200 on one partial tile; then on a device of 163 KiB
    // per block (sm_80's), where only the 128 x 128 tiles fit
    ConvShape wide = s;
    wide.out_channels = 264;
    const Problem P4 = problem_of(wide, 0.05, rng);
    g_tiles = fc::Tiles::kWgmmaWide;
    for (const int smem_kib : {227, 163}) {
      fullconv_emu::max_dynamic_smem_bytes = smem_kib * 1024;
      for (const Config& cfg : configs) {
        if (cfg.dtype != fc::DType::kFloat16 && cfg.dtype != fc::DType::kBFloat16) continue;
        const long at = fullconv_emu::wgmma_image_launches, at_wide = fullconv_emu::wgmma_wide_image_launches;
        run_any(P4, cfg, true, 132, smem_kib == 227, true,
                std::string("igemm channels-last wide wgmma tiles, 200 -> 264 channels, ") + std::to_string(smem_kib) +
                    " KiB " + cfg.name,
                true, smem_kib == 227);
        const long expect_wide = smem_kib == 227 ? 3 : 0;
        EXPECT(fullconv_emu::wgmma_image_launches == at + 3 && fullconv_emu::wgmma_wide_image_launches == at_wide + expect_wide,
               "wide wgmma tiles, %d KiB: %ld wgmma launches (3 expected), %ld of 128 x 256 (%ld expected)\n", smem_kib,
               fullconv_emu::wgmma_image_launches - at, fullconv_emu::wgmma_wide_image_launches - at_wide, expect_wide);
      }
    }
    fullconv_emu::max_dynamic_smem_bytes = 227 * 1024;
    g_tiles = fc::Tiles::kBase;
  }
  // The direct forward's and grad_input's register-blocked kernels on shapes chosen for their
  // cases. grad_input: an RGB stem
  // (3 channels, 7x7 stride 2) with rows longer than a warp task's 128 positions; one and two
  // channels per group (8 positions a thread) with dilation, and with stride 3 against dilation
  // 2 (class taps 3 apart) and stride 2 with dilation 2 (every tap in one class); blocks of 4 and of 8 channels with a partial last block; weight
  // chunks (25 taps x 8 channels x 70 output channels do not fit at once); a residue class
  // with no tap (its inputs get zeros); inputs shorter than the stride; and a 17x17 kernel,
  // whose 289 taps exceed the tables (the one-thread-per-element kernel takes it).
  // forward (the same shapes, with bias, a residual on some and ReLU on others): 20 output
  // channels per group (two warp slices, the second partial; four warps of position tasks), 6
  // and 10, 3, 1 and 2 per group; input channels in chunks (the 5x5 kernel's 70 output channels
  // as 9 slices, 8 warps a block), rows of several segments, taps of a row that meet only
  // padding, and 64 output channels with a 5x5x6 kernel (one input channel's weights for 64
  // channels exceed its shared memory: blocks of 32). grad_weight (register-blocked where a
  // case has at most 4 input and at least 16 output channels per group): the stem in 4 slices,
  // 64 channels of 150 taps. Each case once more in float32 with a grid of 3 blocks.
  {
    struct Case { int nd; int64_t n, cin, cout, g, in[3], k[3], st[3], dil[3]; };
    const Case cases[] = {
        {2, 1, 3, 20, 1, {1, 5, 270}, {1, 7, 7}, {1, 2, 2}, {1, 1, 1}},
        {2, 2, 2, 6, 2, {1, 6, 300}, {1, 3, 3}, {1, 1, 1}, {1, 2, 2}},
        {1, 2, 4, 5, 1, {1, 1, 600}, {1, 1, 5}, {1, 1, 3}, {1, 1, 2}},
        {1, 1, 4, 6, 2, {1, 1, 90}, {1, 1, 4}, {1, 1, 2}, {1, 1, 2}},
        {3, 1, 6, 4, 1, {3, 4, 5}, {3, 2, 3}, {2, 1, 2}, {1, 2, 1}},
        {2, 1, 10, 70, 1, {1, 4, 6}, {1, 5, 5}, {1, 1, 1}, {1, 1, 1}},
        {2, 2, 3, 5, 1, {1, 3, 7}, {1, 1, 2}, {1, 1, 3}, {1, 1, 1}},
        {1, 2, 3, 4, 1, {1, 1, 1}, {1, 1, 3}, {1, 1, 4}, {1, 1, 1}},
        {2, 1, 1, 2, 1, {1, 2, 3}, {1, 17, 17}, {1, 1, 1}, {1, 1, 1}},
        {3, 1, 1, 64, 1, {2, 3, 3}, {5, 5, 6}, {2, 2, 2}, {1, 1, 1}},
    };
    int index = 0;
    for (const Case& c : cases) {
      ConvShape s;
      s.ndim = c.nd;
      s.batch = c.n;
      s.in_channels = c.cin;
      s.out_channels = c.cout;
      s.groups = c.g;
      for (int d = 0; d < 3; ++d) {
        s.in_size[d] = c.in[d];
        s.kernel[d] = c.k[d];
        s.stride[d] = c.st[d];
        s.dilation[d] = c.dil[d];
      }
      s.compute_output_size();
      const Problem P = problem_of(s, 1.0 / std::sqrt(double(s.in_channels_per_group() * s.kernel_volume())), rng);
      // (grad_weight too where the register-blocked kernel takes the problem: few input channels)
      g_direct_passes = fc::grad_weight_blocked_workspace(fc::DType::kFloat64, s, 132) > 0 ? 7 : 3;
      for (const Config& cfg : configs) {
        if (cfg.tf32) continue;
        run_any(P, cfg, false, 132, index % 2 == 1, index % 3 == 0,
                std::string("direct forward and grad_input cases ") + cfg.name + " " + describe(P));
      }
      // again with at most 3 blocks a launch: the kernels' block-stride loops go round
      fullconv_emu::grid_cap_value = 3;
      run_any(P, configs[1], false, 132, index % 2 == 0, index % 3 == 1,
              std::string("direct cases, 3 blocks ") + configs[1].name + " " + describe(P));
      fullconv_emu::grid_cap_value = 1LL << 24;
      g_direct_passes = 7;
      ++index;
    }
  }
  run_nonfinite(true);
  run_nonfinite(false);
  g_direct_kernels = fc::DirectKernels::kPerElement;
  run_nonfinite(false);
  g_direct_kernels = fc::DirectKernels::kBlocked;
  run_nonfinite(true, true, false);
  run_nonfinite(true, true, true);
  EXPECT(channels_last_weight_runs > 0, "no grad_weight ran the channels-last kernel\n");
  EXPECT(blocked_weight_runs > 0, "no grad_weight ran the register-blocked direct kernel\n");
  EXPECT(mma_tile_runs > 0, "no problem ran the mma.sync tiles\n");
  EXPECT(simt_wide_runs > 0, "no problem ran the wide FMA tiles\n");
  // the swizzled stages: every ldmatrix matrix reads its 8 rows from 8 different bank groups
  EXPECT(fullconv_emu::warp_instructions > 0 && fullconv_emu::ldmatrix_bank_conflicts == 0,
         "%ld ldmatrix matrices with a shared-memory bank conflict\n", fullconv_emu::ldmatrix_bank_conflicts);
  std::printf("%d problem x dtype runs, %ld kernel launches emulated (%ld warp-wide mma.sync/ldmatrix), %d failures\n",
              runs, fullconv_emu::launches, fullconv_emu::warp_instructions, failures);
  return failures == 0 ? 0 : 1;
}
