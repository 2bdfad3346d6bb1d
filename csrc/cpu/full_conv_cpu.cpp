// CPU kernels of full convolution: padding-free "residue-class GEMM + col2im".
//
// Inputs are split into residue classes (input index mod stride, per dim; conv_shape.h).
// Every tap serves exactly one class, and within a class the inputs map to a contiguous
// block of outputs. For one class with T taps:
//   forward      C[T*Cout_g, cols] = W_class[T*Cout_g, Cin_g] @ X_class[Cin_g, cols]
//                then C is scatter-added (col2im) into the output blocks of its taps;
//   grad_input   C = gather of grad_output blocks,  grad_X_class = W_class^T @ C;
//   grad_weight  grad_W_class += C @ X_class^T.
// With stride 1 there is one class and X_class is the input itself (no copy). Only products
// of a weight with a real input element are computed: no padded tensor, no zero taps, and
// for stride > 1 no products that a strided output would discard.
//
// The columns of a class span the whole batch (column = sample x class position), so the
// GEMMs stay large for small maps. Workspace bound: columns are processed in chunks of at most
//   max(1, kColumnBudget / max(T*Cout_g, Cin_g))
// so each of the two column buffers (C, and the gathered X or grad_X chunk) holds at most
// max(kColumnBudget, T*Cout_g, Cin_g) elements.
// Small channel counts per group (depthwise, RGB first layers) make that GEMM degenerate;
// there a direct kernel is used instead: for each tap, tap_output_range() gives the outputs at
// which it reads real input, and the products run as contiguous row loops.
// Where the CPU has AVX2 + FMA (AVX-512 where present), float32/float64 layers run on the
// blocked kernels (blocked_kernels.h), chosen per pass (choose_algorithm): register tiles of
// B output channels x 6 positions for >= 8 channels, vectors along output rows for fewer,
// a depthwise kernel for one input channel per group. They read inputs in their own layout
// (or a channels-last copy where that pays), write outputs in their final layout, and skip
// every product of padding. FULLCONV_CPU_ALGORITHM=gemm|direct|blocked (default auto) forces
// one formulation for every pass (tests use it), FULLCONV_CPU_BLOCKED_ISA and
// FULLCONV_CPU_BLOCKED_INPUT force the blocked kernels' instruction set and input layout.
//
// Reduced precision (float16, bfloat16) is computed in float32 and rounded once at the end.
// Results are deterministic: every output element is accumulated by one thread in a fixed
// order; grad_weight partial sums of sample blocks are added in block order.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "../conv_args.h"
#include "blocked_kernels.h"

namespace fullconv {
namespace {

// Calls of the CPU's blocked kernels and copies by name (one relaxed increment per call at the
// operator level), so tests can see which kernel a problem took: cpu_kernel_calls().
enum class KernelCount {
  kTiles, kBf16Tiles, kRows, kDepthwise, kDepthwiseCl, kGradWeightTiles, kGather, kTranspose, kGroupBlocked, kCount
};
constexpr const char* kKernelCountNames[] = {"tiles", "bf16_tiles", "rows", "depthwise", "depthwise_cl",
                                             "grad_weight_tiles", "gather", "transpose", "group_blocked"};
static_assert(sizeof(kKernelCountNames) / sizeof(kKernelCountNames[0]) == static_cast<size_t>(KernelCount::kCount),
              "a name per counter");
std::atomic<int64_t> g_kernel_calls[static_cast<int>(KernelCount::kCount)];

void count_call(KernelCount k) { g_kernel_calls[static_cast<int>(k)].fetch_add(1, std::memory_order_relaxed); }

}  // namespace

int64_t cpu_kernel_calls(const std::string& name) {
  std::string known;
  for (int i = 0; i < static_cast<int>(KernelCount::kCount); ++i) {
    if (name == kKernelCountNames[i]) return g_kernel_calls[i].load(std::memory_order_relaxed);
    known += std::string(i == 0 ? "" : ", ") + kKernelCountNames[i];
  }
  TORCH_CHECK_VALUE(false, "_cpu_kernel_calls: unknown kernel '", name, "' (known: ", known, ")");
  return 0;  // not reached
}

namespace {

constexpr int64_t kColumnBudget = int64_t(1) << 22;
constexpr int64_t kCacheColumnElems = int64_t(1) << 16;
constexpr int64_t kMinChunkColumns = 128;
constexpr int64_t kGradWeightChunkBytes = int64_t(512) << 10;

// One residue class: the inputs i with i mod stride == r (per dim) and the taps serving them.
struct ResidueClass {
  int64_t count[kMaxSpatialDims];  // inputs of the class along each dim
  int64_t columns = 0;             // count[0] * count[1] * count[2]
  int64_t in_offset = 0;           // flat input offset of the class's first input
  std::vector<int64_t> taps;       // flat tap indices, (k0 * K1 + k1) * K2 + k2
  std::vector<int64_t> out_offset; // per tap: flat output offset reached by the first input
};

struct Plan {
  ConvShape s;
  std::vector<ResidueClass> classes;
  bool identity_columns = false;  // stride 1 everywhere: one class whose columns are the input
  int64_t in_step[kMaxSpatialDims];   // flat input step between class neighbours per dim
  int64_t out_step[kMaxSpatialDims];  // flat output step per dim
};

Plan make_plan(const ConvShape& s) {
  Plan plan;
  plan.s = s;
  const int64_t L1 = s.in_size[1], L2 = s.in_size[2];
  const int64_t O1 = s.out_size[1], O2 = s.out_size[2];
  plan.in_step[0] = s.stride[0] * L1 * L2;
  plan.in_step[1] = s.stride[1] * L2;
  plan.in_step[2] = s.stride[2];
  plan.out_step[0] = O1 * O2;
  plan.out_step[1] = O2;
  plan.out_step[2] = 1;
  plan.identity_columns = s.stride[0] == 1 && s.stride[1] == 1 && s.stride[2] == 1;

  // Per dim: the residues that some tap serves and that hold at least one input,
  // with their taps. At most K residues per dim, so at most K0*K1*K2 classes.
  struct DimClass {
    int64_t r;
    std::vector<int64_t> taps;
  };
  std::vector<DimClass> per_dim[kMaxSpatialDims];
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    for (int64_t k = 0; k < s.kernel[i]; ++k) {
      const int64_t r = tap_residue(k, s.kernel[i], s.stride[i], s.dilation[i]);
      if (residue_count(s.in_size[i], s.stride[i], r) == 0) continue;
      auto it = std::find_if(per_dim[i].begin(), per_dim[i].end(),
                             [&](const DimClass& c) { return c.r == r; });
      if (it == per_dim[i].end()) {
        per_dim[i].push_back({r, {}});
        it = per_dim[i].end() - 1;
      }
      it->taps.push_back(k);
    }
  }
  for (const auto& c0 : per_dim[0])
    for (const auto& c1 : per_dim[1])
      for (const auto& c2 : per_dim[2]) {
        ResidueClass rc;
        const DimClass* dc[3] = {&c0, &c1, &c2};
        for (int i = 0; i < kMaxSpatialDims; ++i)
          rc.count[i] = residue_count(s.in_size[i], s.stride[i], dc[i]->r);
        rc.columns = rc.count[0] * rc.count[1] * rc.count[2];
        rc.in_offset = (c0.r * L1 + c1.r) * L2 + c2.r;
        for (int64_t k0 : c0.taps)
          for (int64_t k1 : c1.taps)
            for (int64_t k2 : c2.taps) {
              const int64_t o0 = tap_output_start(c0.r, k0, s.kernel[0], s.stride[0], s.dilation[0]);
              const int64_t o1 = tap_output_start(c1.r, k1, s.kernel[1], s.stride[1], s.dilation[1]);
              const int64_t o2 = tap_output_start(c2.r, k2, s.kernel[2], s.stride[2], s.dilation[2]);
              rc.taps.push_back((k0 * s.kernel[1] + k1) * s.kernel[2] + k2);
              rc.out_offset.push_back((o0 * O1 + o1) * O2 + o2);
            }
        plan.classes.push_back(std::move(rc));
      }
  return plan;
}

// Columns per chunk: enough for an efficient GEMM (kMinChunkColumns), few enough that the
// column buffer stays cache-resident (kCacheColumnElems), never above the workspace bound.
int64_t chunk_columns(const Plan& plan, const ResidueClass& rc) {
  const int64_t rows = static_cast<int64_t>(rc.taps.size()) * plan.s.out_channels_per_group();
  const int64_t widest = std::max<int64_t>({rows, plan.s.in_channels_per_group(), 1});
  const int64_t cached = std::max<int64_t>(kMinChunkColumns, kCacheColumnElems / widest);
  const int64_t bound = std::max<int64_t>(1, kColumnBudget / widest);
  return std::max<int64_t>(1, std::min({rc.columns * plan.s.batch, cached, bound}));
}

// The columns of a class run over the whole batch: column q is sample q / columns, class-local
// position q % columns. Calls f(offset_in_chunk, n, a, b, c, run) for the runs of columns
// [q0, q1) that are contiguous along the innermost dim (a run never crosses a row, hence
// never a sample); (a, b, c) is the class-local index of the run's start.
template <typename F>
inline void for_each_run(const ResidueClass& rc, int64_t q0, int64_t q1, const F& f) {
  int64_t q = q0;
  while (q < q1) {
    const int64_t n = q / rc.columns, j = q % rc.columns;
    const int64_t c = j % rc.count[2];
    const int64_t ab = j / rc.count[2];
    const int64_t run = std::min(rc.count[2] - c, q1 - q);
    f(q - q0, n, ab / rc.count[1], ab % rc.count[1], c, run);
    q += run;
  }
}

// Tap weights of each class as GEMM operands: [G, T*Cout_g, Cin_g], row t*Cout_g + co.
std::vector<at::Tensor> class_weights(const Plan& plan, const at::Tensor& weight) {
  const auto& s = plan.s;
  const auto w = weight.reshape({s.groups, s.out_channels_per_group(), s.in_channels_per_group(),
                                 s.kernel_volume()})
                     .permute({0, 3, 1, 2});  // [G, Ktot, Cout_g, Cin_g]
  std::vector<at::Tensor> mats;
  for (const auto& rc : plan.classes) {
    const auto taps = at::tensor(rc.taps, at::kLong);
    mats.push_back(w.index_select(1, taps)
                       .reshape({s.groups, -1, s.in_channels_per_group()})
                       .contiguous());
  }
  return mats;
}

// Flat offset of the first input channel of group g in sample n.
inline int64_t input_base(const ConvShape& s, int64_t n, int64_t g) {
  return (n * s.in_channels + g * s.in_channels_per_group()) * s.in_spatial();
}
inline int64_t output_base(const ConvShape& s, int64_t n, int64_t g) {
  return (n * s.out_channels + g * s.out_channels_per_group()) * s.out_spatial();
}

// Copies the input columns [q0, q1) of a class, all channels of group g, into dst[Cin_g, n].
template <typename scalar_t>
void gather_input(const Plan& plan, const ResidueClass& rc, const scalar_t* x, int64_t g,
                  int64_t q0, int64_t q1, scalar_t* dst) {
  const auto& s = plan.s;
  const int64_t n_cols = q1 - q0, in_spatial = s.in_spatial();
  at::parallel_for(0, s.in_channels_per_group(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t ci = begin; ci < end; ++ci) {
      scalar_t* out = dst + ci * n_cols;
      for_each_run(rc, q0, q1, [&](int64_t off, int64_t n, int64_t a, int64_t b, int64_t c, int64_t run) {
        const scalar_t* p = x + input_base(s, n, g) + ci * in_spatial + rc.in_offset +
                            a * plan.in_step[0] + b * plan.in_step[1] + c * plan.in_step[2];
        const int64_t step = plan.in_step[2];
        if (step == 1) {
          std::copy(p, p + run, out + off);
        } else {
          for (int64_t q = 0; q < run; ++q) out[off + q] = p[q * step];
        }
      });
    }
  });
}

// Inverse of gather_input: writes src[Cin_g, n] to the input positions of columns [q0, q1)
// (each input belongs to one class and one column, so this is an assignment).
template <typename scalar_t>
void scatter_input(const Plan& plan, const ResidueClass& rc, const scalar_t* src, int64_t g,
                   int64_t q0, int64_t q1, scalar_t* gx) {
  const auto& s = plan.s;
  const int64_t n_cols = q1 - q0, in_spatial = s.in_spatial();
  at::parallel_for(0, s.in_channels_per_group(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t ci = begin; ci < end; ++ci) {
      const scalar_t* in = src + ci * n_cols;
      for_each_run(rc, q0, q1, [&](int64_t off, int64_t n, int64_t a, int64_t b, int64_t c, int64_t run) {
        scalar_t* p = gx + input_base(s, n, g) + ci * in_spatial + rc.in_offset +
                      a * plan.in_step[0] + b * plan.in_step[1] + c * plan.in_step[2];
        const int64_t step = plan.in_step[2];
        for (int64_t q = 0; q < run; ++q) p[q * step] = in[off + q];
      });
    }
  });
}

// Output blocks of the taps for the columns [q0, q1): calls f(row t*Cout_g + co, pointer to
// the output element of each run start, offset in chunk, run) for every output channel co of
// group g. Parallel over co; the taps of one channel are visited in order by one thread, so
// accumulation into the output is deterministic.
template <typename scalar_t, typename F>
void for_each_output_run(const Plan& plan, const ResidueClass& rc, scalar_t* y, int64_t g,
                         int64_t q0, int64_t q1, const F& f) {
  const auto& s = plan.s;
  const int64_t cout_g = s.out_channels_per_group(), out_spatial = s.out_spatial();
  const int64_t ntaps = static_cast<int64_t>(rc.taps.size());
  at::parallel_for(0, cout_g, 1, [&](int64_t begin, int64_t end) {
    for (int64_t co = begin; co < end; ++co) {
      for (int64_t t = 0; t < ntaps; ++t) {
        const int64_t row = t * cout_g + co;
        for_each_run(rc, q0, q1, [&](int64_t off, int64_t n, int64_t a, int64_t b, int64_t c, int64_t run) {
          scalar_t* base = y + output_base(s, n, g) + co * out_spatial + rc.out_offset[t];
          f(row, base + a * plan.out_step[0] + b * plan.out_step[1] + c, off, run);
        });
      }
    }
  });
}

// Input columns [q0, q1) of a class as a [Cin_g, n] matrix: a view of the input when the
// chunk lies in one sample and the class is the whole input (stride 1), else gathered.
template <typename scalar_t>
at::Tensor input_columns(const Plan& plan, const ResidueClass& rc, const at::Tensor& x, int64_t g,
                         int64_t q0, int64_t q1, at::Tensor& buffer) {
  const auto& s = plan.s;
  const int64_t cin_g = s.in_channels_per_group(), n_cols = q1 - q0;
  const int64_t n = q0 / rc.columns;
  if (plan.identity_columns && (q1 - 1) / rc.columns == n) {
    return x.select(0, n).narrow(0, g * cin_g, cin_g).reshape({cin_g, s.in_spatial()})
        .narrow(1, q0 - n * rc.columns, n_cols);
  }
  gather_input(plan, rc, x.const_data_ptr<scalar_t>(), g, q0, q1, buffer.mutable_data_ptr<scalar_t>());
  return buffer.narrow(0, 0, cin_g * n_cols).view({cin_g, n_cols});
}

// Splits the batch into blocks of consecutive samples: one block per thread when the batch is
// large enough (each block then runs its chunks with single-threaded BLAS: no synchronisation
// inside a layer), else a single block whose GEMMs, gathers and scatters are parallel.
// Calls body(block, n_begin, n_end); returns the number of blocks.
template <typename F>
int64_t for_each_sample_block(const ConvShape& s, const F& body) {
  const int64_t threads = at::get_num_threads();
  const int64_t blocks = (s.batch >= 2 * threads && threads > 1) ? threads : 1;
  // The blocks call ATen ops (mm, empty): worker threads take the caller's thread-local
  // state (grad mode, dispatch exclusions), as they would on the calling thread.
  const at::ThreadLocalState caller_state;
  // at::parallel_for runs inline (no nested region) when the grain exceeds the range
  at::parallel_for(0, blocks, blocks > 1 ? 1 : 2, [&](int64_t b0, int64_t b1) {
    const at::ThreadLocalStateGuard guard(caller_state);
    for (int64_t b = b0; b < b1; ++b) body(b, b * s.batch / blocks, (b + 1) * s.batch / blocks);
  });
  return blocks;
}

int64_t sample_blocks(const ConvShape& s) {
  const int64_t threads = at::get_num_threads();
  return (s.batch >= 2 * threads && threads > 1) ? threads : 1;
}

// Forward: for each class and group, column chunks spanning the samples of a block (large
// GEMMs even for small maps), C = W_class @ X_cols, then C is scatter-added into the output.
template <typename scalar_t>
void forward_kernel(const Plan& plan, const at::Tensor& x, const std::vector<at::Tensor>& wmats,
                    at::Tensor& y) {
  const auto& s = plan.s;
  const int64_t cin_g = s.in_channels_per_group();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  for_each_sample_block(s, [&](int64_t, int64_t n_begin, int64_t n_end) {
    for (size_t ci = 0; ci < plan.classes.size(); ++ci) {
      const auto& rc = plan.classes[ci];
      const int64_t rows = wmats[ci].size(1), chunk = chunk_columns(plan, rc);
      auto cols = at::empty({rows * chunk}, x.options());
      auto xbuf = at::empty({cin_g * chunk}, x.options());
      for (int64_t g = 0; g < s.groups; ++g) {
        const auto w = wmats[ci].select(0, g);
        for (int64_t q0 = n_begin * rc.columns; q0 < n_end * rc.columns; q0 += chunk) {
          const int64_t q1 = std::min(n_end * rc.columns, q0 + chunk), n_cols = q1 - q0;
          const auto x_cols = input_columns<scalar_t>(plan, rc, x, g, q0, q1, xbuf);
          auto c = cols.narrow(0, 0, rows * n_cols).view({rows, n_cols});
          at::mm_out(c, w, x_cols);
          const scalar_t* cp = c.const_data_ptr<scalar_t>();
          for_each_output_run(plan, rc, yp, g, q0, q1,
                              [&](int64_t row, scalar_t* dst, int64_t off, int64_t run) {
                                const scalar_t* src = cp + row * n_cols + off;
                                for (int64_t q = 0; q < run; ++q) dst[q] += src[q];
                              });
        }
      }
    }
  });
}

// Backward of the GEMM formulation. For each class, group and column chunk the grad_output
// blocks are gathered once into C; then grad_X_cols = W_class^T @ C is written to grad_input
// and grad_W_class += C @ X_cols^T. Sample blocks accumulate grad_weight into their own
// partial sums, added in block order afterwards (deterministic for a given thread count).
template <typename scalar_t>
void backward_kernel(const Plan& plan, const at::Tensor& gy, const at::Tensor& x,
                     const std::vector<at::Tensor>& wmats, at::Tensor* gx,
                     std::vector<at::Tensor>* gw_mats) {
  const auto& s = plan.s;
  const int64_t cin_g = s.in_channels_per_group();
  const scalar_t* gyp = gy.const_data_ptr<scalar_t>();
  const int64_t blocks = sample_blocks(s);
  std::vector<std::vector<at::Tensor>> partial(blocks);
  if (gw_mats != nullptr) {
    partial[0] = *gw_mats;
    for (int64_t b = 1; b < blocks; ++b)
      for (const auto& m : *gw_mats) partial[b].push_back(at::zeros_like(m));
  }
  for_each_sample_block(s, [&](int64_t block, int64_t n_begin, int64_t n_end) {
    for (size_t ci = 0; ci < plan.classes.size(); ++ci) {
      const auto& rc = plan.classes[ci];
      const int64_t rows = wmats[ci].size(1), chunk = chunk_columns(plan, rc);
      auto cols = at::empty({rows * chunk}, gy.options());
      auto buf = at::empty({cin_g * chunk}, gy.options());
      for (int64_t g = 0; g < s.groups; ++g) {
        for (int64_t q0 = n_begin * rc.columns; q0 < n_end * rc.columns; q0 += chunk) {
          const int64_t q1 = std::min(n_end * rc.columns, q0 + chunk), n_cols = q1 - q0;
          auto c = cols.narrow(0, 0, rows * n_cols).view({rows, n_cols});
          scalar_t* cp = c.mutable_data_ptr<scalar_t>();
          for_each_output_run(plan, rc, const_cast<scalar_t*>(gyp), g, q0, q1,
                              [&](int64_t row, scalar_t* src, int64_t off, int64_t run) {
                                std::copy(src, src + run, cp + row * n_cols + off);
                              });
          if (gx != nullptr) {
            auto g_cols = buf.narrow(0, 0, cin_g * n_cols).view({cin_g, n_cols});
            at::mm_out(g_cols, wmats[ci].select(0, g).t(), c);
            scatter_input(plan, rc, g_cols.const_data_ptr<scalar_t>(), g, q0, q1,
                          gx->mutable_data_ptr<scalar_t>());
          }
          if (gw_mats != nullptr) {
            const auto x_cols = input_columns<scalar_t>(plan, rc, x, g, q0, q1, buf);
            partial[block][ci].select(0, g).addmm_(c, x_cols.t());
          }
        }
      }
    }
  });
  if (gw_mats != nullptr)
    for (int64_t b = 1; b < blocks; ++b)
      for (size_t ci = 0; ci < gw_mats->size(); ++ci) (*gw_mats)[ci].add_(partial[b][ci]);
}

// ---- direct formulation ------------------------------------------------------------------

// Where tap (k0, k1, k2) meets real input: outputs lo..hi per dim; input index o*s + shift.
struct TapWindow {
  int64_t lo[kMaxSpatialDims], hi[kMaxSpatialDims], shift[kMaxSpatialDims];
  bool empty = false;
};

TapWindow tap_window(const ConvShape& s, int64_t tap) {
  TapWindow tw;
  for (int i = kMaxSpatialDims - 1; i >= 0; --i) {
    const int64_t k = tap % s.kernel[i];
    tap /= s.kernel[i];
    tap_output_range(k, s.in_size[i], s.kernel[i], s.stride[i], s.dilation[i], &tw.lo[i], &tw.hi[i]);
    tw.shift[i] = k * s.dilation[i] - s.padding(i);
    tw.empty = tw.empty || tw.lo[i] > tw.hi[i];
  }
  return tw;
}

// Calls f(out_row, in_row, count) for each innermost row of a tap window: output elements
// out_row[0..count) pair with input elements in_row[0, s2, 2*s2, ...) (flat offsets).
template <typename F>
inline void for_each_tap_row(const ConvShape& s, const TapWindow& tw, const F& f) {
  if (tw.empty) return;
  const int64_t count = tw.hi[2] - tw.lo[2] + 1;
  for (int64_t o0 = tw.lo[0]; o0 <= tw.hi[0]; ++o0) {
    const int64_t i0 = o0 * s.stride[0] + tw.shift[0];
    for (int64_t o1 = tw.lo[1]; o1 <= tw.hi[1]; ++o1) {
      const int64_t i1 = o1 * s.stride[1] + tw.shift[1];
      f((o0 * s.out_size[1] + o1) * s.out_size[2] + tw.lo[2],
        (i0 * s.in_size[1] + i1) * s.in_size[2] + tw.lo[2] * s.stride[2] + tw.shift[2], count);
    }
  }
}

std::vector<TapWindow> tap_windows(const ConvShape& s) {
  std::vector<TapWindow> w;
  for (int64_t t = 0; t < s.kernel_volume(); ++t) w.push_back(tap_window(s, t));
  return w;
}

template <typename scalar_t>
void direct_forward_kernel(const ConvShape& s, const at::Tensor& x, const at::Tensor& weight,
                           at::Tensor& y) {
  const int64_t cin_g = s.in_channels_per_group(), cout_g = s.out_channels_per_group();
  const int64_t in_sp = s.in_spatial(), out_sp = s.out_spatial(), ktot = s.kernel_volume();
  const int64_t step = s.stride[2];
  const auto windows = tap_windows(s);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* wp = weight.const_data_ptr<scalar_t>();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, s.batch * s.out_channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / s.out_channels, co = nc % s.out_channels, g = co / cout_g;
      scalar_t* y_nc = yp + nc * out_sp;
      for (int64_t ci = 0; ci < cin_g; ++ci) {
        const scalar_t* x_nc = xp + (n * s.in_channels + g * cin_g + ci) * in_sp;
        const scalar_t* w_tap = wp + (co * cin_g + ci) * ktot;
        for (int64_t t = 0; t < ktot; ++t) {
          const scalar_t wv = w_tap[t];
          for_each_tap_row(s, windows[t], [&](int64_t out_row, int64_t in_row, int64_t count) {
            scalar_t* yr = y_nc + out_row;
            const scalar_t* xr = x_nc + in_row;
            if (step == 1) {
              for (int64_t q = 0; q < count; ++q) yr[q] += wv * xr[q];
            } else {
              for (int64_t q = 0; q < count; ++q) yr[q] += wv * xr[q * step];
            }
          });
        }
      }
    }
  });
}

template <typename scalar_t>
void direct_grad_input_kernel(const ConvShape& s, const at::Tensor& gy, const at::Tensor& weight,
                              at::Tensor& gx) {
  const int64_t cin_g = s.in_channels_per_group(), cout_g = s.out_channels_per_group();
  const int64_t in_sp = s.in_spatial(), out_sp = s.out_spatial(), ktot = s.kernel_volume();
  const int64_t step = s.stride[2];
  const auto windows = tap_windows(s);
  const scalar_t* gyp = gy.const_data_ptr<scalar_t>();
  const scalar_t* wp = weight.const_data_ptr<scalar_t>();
  scalar_t* gxp = gx.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, s.batch * s.in_channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / s.in_channels, c = nc % s.in_channels;
      const int64_t g = c / cin_g, ci = c % cin_g;
      scalar_t* gx_nc = gxp + nc * in_sp;
      for (int64_t co = g * cout_g; co < (g + 1) * cout_g; ++co) {
        const scalar_t* gy_nc = gyp + (n * s.out_channels + co) * out_sp;
        const scalar_t* w_tap = wp + (co * cin_g + ci) * ktot;
        for (int64_t t = 0; t < ktot; ++t) {
          const scalar_t wv = w_tap[t];
          for_each_tap_row(s, windows[t], [&](int64_t out_row, int64_t in_row, int64_t count) {
            const scalar_t* gyr = gy_nc + out_row;
            scalar_t* gxr = gx_nc + in_row;
            if (step == 1) {
              for (int64_t q = 0; q < count; ++q) gxr[q] += wv * gyr[q];
            } else {
              for (int64_t q = 0; q < count; ++q) gxr[q * step] += wv * gyr[q];
            }
          });
        }
      }
    }
  });
}

// Dot product in eight independent lanes (vectorisable, fixed summation order).
template <typename scalar_t>
inline scalar_t strided_dot(const scalar_t* a, const scalar_t* b, int64_t b_step, int64_t n) {
  scalar_t lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t q = 0;
  if (b_step == 1) {
    for (; q + 8 <= n; q += 8)
      for (int l = 0; l < 8; ++l) lanes[l] += a[q + l] * b[q + l];
  }
  for (; q < n; ++q) lanes[q & 7] += a[q] * b[q * b_step];
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

template <typename scalar_t>
void direct_grad_weight_kernel(const ConvShape& s, const at::Tensor& gy, const at::Tensor& x,
                               at::Tensor& gw) {
  const int64_t cin_g = s.in_channels_per_group(), cout_g = s.out_channels_per_group();
  const int64_t in_sp = s.in_spatial(), out_sp = s.out_spatial(), ktot = s.kernel_volume();
  const int64_t step = s.stride[2];
  const auto windows = tap_windows(s);
  const scalar_t* gyp = gy.const_data_ptr<scalar_t>();
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* gwp = gw.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, s.out_channels * cin_g, 1, [&](int64_t begin, int64_t end) {
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t co = pair / cin_g, ci = pair % cin_g, g = co / cout_g;
      for (int64_t t = 0; t < ktot; ++t) {
        scalar_t acc = 0;
        for (int64_t n = 0; n < s.batch; ++n) {
          const scalar_t* gy_nc = gyp + (n * s.out_channels + co) * out_sp;
          const scalar_t* x_nc = xp + (n * s.in_channels + g * cin_g + ci) * in_sp;
          for_each_tap_row(s, windows[t], [&](int64_t out_row, int64_t in_row, int64_t count) {
            acc += strided_dot(gy_nc + out_row, x_nc + in_row, step, count);
          });
        }
        gwp[pair * ktot + t] = acc;
      }
    }
  });
}

enum class Algorithm { kGemm, kDirect, kBlocked };

at::ScalarType compute_dtype(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

// The instruction set of the blocked kernels (FULLCONV_CPU_BLOCKED_ISA may pick a narrower
// one than the CPU's best; an invalid value is a ValueError).
blocked::Isa blocked_isa() {
  try {
    return blocked::isa();
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, e.what());
  }
  return blocked::Isa::kNone;  // not reached
}

// Between the GEMM and direct formulations: direct where the per-group GEMM degenerates to
// outer products: depthwise-like layers (one input channel per group, few outputs), and few
// input channels at stride 1 (the strided direct loops gather and lose to the GEMM).
// Measured in benchmarks/NOTES.md.
Algorithm choose_unblocked(const ConvShape& s) {
  const int64_t cin_g = s.in_channels_per_group(), cout_g = s.out_channels_per_group();
  const bool depthwise_like = cin_g == 1 && cout_g <= 4;
  return (depthwise_like || (s.unit_stride() && cin_g <= 4)) ? Algorithm::kDirect : Algorithm::kGemm;
}

// Output channels per group below which a problem runs on the rows kernel (vectors along the
// positions of a row) rather than on register tiles of B output channels, most of whose
// lanes would be padding (benchmarks/NOTES.md, entry 10).
constexpr int64_t kRowsBelowChannels = 8;
constexpr int64_t kRowsMinInputChannels = 4;
// One-tap grad_weight: output positions per sample from which the GEMM path (stride 1) beats
// ATen's convolution_backward (measured at 56x56 and against it at 28x28; NOTES entry 38).
constexpr int64_t kOneTapGemmGradWeightPositions = 1600;

// Whether a one-tap convolution in `dtype` runs on ATen's convolution (see full_conv_cpu_impl).
bool one_tap_on_aten(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || (dtype == at::kBFloat16 && blocked::bf16_available());
}

// A batched tensor with ndim spatial dims as a 5-D one (leading spatial dims of size 1).
at::Tensor as_5d(const at::Tensor& t, int ndim) {
  auto r = t;
  for (int i = ndim; i < kMaxSpatialDims; ++i) r = r.unsqueeze(2);
  return r;
}

// The same, of a tensor that may be unbatched (`batched` false: a batch of one).
at::Tensor as_batched_5d(const at::Tensor& t, bool batched, int ndim) {
  return as_5d(batched ? t : t.unsqueeze(0), ndim);
}

bool rows_kernel(int64_t out_channels_per_group, int64_t last_stride) {
  return out_channels_per_group < kRowsBelowChannels && last_stride == 1;
}

// One input channel and few output channels per group (depthwise) at stride 1 along the
// row: its own kernel, vectors along output rows with one broadcast weight per tap
// (benchmarks/NOTES.md, entry 14). With many output channels the register tiles reuse each
// input across them instead.
bool depthwise_kernel(int64_t in_channels_per_group, int64_t out_channels_per_group, int64_t last_stride) {
  return in_channels_per_group == 1 && out_channels_per_group < kRowsBelowChannels && last_stride == 1;
}

// The blocked kernels reading their input along rows (they need unit element stride there).
bool row_vector_kernel(int64_t in_channels_per_group, int64_t out_channels_per_group, int64_t last_stride) {
  return depthwise_kernel(in_channels_per_group, out_channels_per_group, last_stride) ||
         rows_kernel(out_channels_per_group, last_stride);
}

// An internal switch (read on every call): the environment variable `name`, `fallback` when
// unset or empty; a value not in `allowed` is a ValueError naming them.
std::string env_setting(const char* name, const char* fallback, std::initializer_list<const char*> allowed) {
  const char* env = std::getenv(name);
  const std::string v = env != nullptr && *env != '\0' ? env : fallback;
  std::string choices;
  size_t i = 0;
  for (const char* a : allowed) {
    if (v == a) return v;
    choices += (i == 0 ? "" : i + 1 == allowed.size() ? " or " : ", ") + std::string(a);
    ++i;
  }
  TORCH_CHECK_VALUE(false, name, " must be ", choices, ", got '", v, "'");
  return v;  // not reached
}

// Whether a depthwise layer of one output channel per input channel reads its channels-last
// input `t5` (5-D) in place with vectors across channels (blocked::Problem::
// depthwise_channels_last) rather than copying it to NCHW for the row-vector kernel:
// FULLCONV_CPU_DEPTHWISE_CL=auto (default), fixed (the kernel with every tile compiled for its
// full width, the last of a row testing each position; to time the two) or off (the copy, to
// time both).
std::string depthwise_cl_mode() { return env_setting("FULLCONV_CPU_DEPTHWISE_CL", "auto", {"auto", "fixed", "off"}); }
bool depthwise_cl_setting() { return depthwise_cl_mode() != "off"; }

bool depthwise_channels_last_input(const at::Tensor& t5, int64_t in_channels_per_group,
                                   int64_t out_channels_per_group) {
  return depthwise_cl_setting() && in_channels_per_group == 1 && out_channels_per_group == 1 && t5.size(1) > 1 &&
         t5.stride(1) == 1 && t5.size(4) > 1 && t5.stride(4) != 1;
}

// Whether a blocked problem on bfloat16 operands (`in_channels_per_group` and
// `out_channels_per_group` those of the problem the tiles solve) runs on the bfloat16 tiles
// (blocked::forward_bf16: pairs of input channels, float32 sums) rather than on float32
// copies: the register-tile kernel (not rows or depthwise), an even number of input channels
// per group, AVX-512 with AVX512_BF16, and FULLCONV_CPU_BF16_TILES=auto (off: the float32
// tiles, to time both side by side; another value is a ValueError).
bool bf16_tiles(blocked::Isa isa, int64_t in_channels_per_group, int64_t out_channels_per_group,
                int64_t last_stride) {
  return env_setting("FULLCONV_CPU_BF16_TILES", "auto", {"auto", "off"}) == "auto" &&
         isa == blocked::Isa::kAvx512 && blocked::bf16_available() &&
         in_channels_per_group % 2 == 0 &&
         !row_vector_kernel(in_channels_per_group, out_channels_per_group, last_stride);
}

// A batched 5-D bfloat16 operand of the bfloat16 tiles: channels-last (a copy unless it is).
at::Tensor bf16_operand(const at::Tensor& t, bool batched, int ndim) {
  const auto t5 = as_batched_5d(t, batched, ndim);
  return t5.stride(1) == 1 || t5.size(1) == 1 ? t5 : t5.contiguous(at::MemoryFormat::ChannelsLast3d);
}

// FULLCONV_CPU_ALGORITHM: auto (also when unset or empty), gemm, direct or blocked.
std::string cpu_algorithm_setting() {
  return env_setting("FULLCONV_CPU_ALGORITHM", "auto", {"auto", "gemm", "direct", "blocked"});
}

// Which pass of the operator an algorithm is chosen for.
enum class Pass { kForward, kGradInput, kGradWeight };

// The blocked kernels when the CPU has them and the dtype is float32/float64 (also the
// compute dtype of float16/bfloat16). Per pass, by the channels its kernel vectorises over
// (measured in benchmarks/NOTES.md, entries 5, 10 and 14; 1x1 kernels: forward only):
//   forward     register tiles for >= 8 output channels per group, else vectors along output
//               rows (stride 1 along the row, >= 4 input channels per group), or the tiles
//               (strided along the row, >= 2 input channels per group); other few-channel
//               layers, depthwise among them, stay unblocked
//   grad_input  the same with input and output channels swapped (its residue classes all
//               have stride 1); tiles only where both sides have >= 8 channels per group
//   grad_weight register tiles for >= 8 output channels per group, else unblocked
// FULLCONV_CPU_ALGORITHM overrides (gemm | direct | blocked) for every pass.
Algorithm choose_algorithm(const ConvShape& s, at::ScalarType dtype, Pass pass) {
  const bool blocked_ok = blocked_isa() != blocked::Isa::kNone && (dtype == at::kFloat || dtype == at::kDouble);
  const std::string v = cpu_algorithm_setting();
  if (v == "gemm") return Algorithm::kGemm;
  if (v == "direct") return Algorithm::kDirect;
  if (v == "blocked") {
    TORCH_CHECK(blocked_isa() != blocked::Isa::kNone, "FULLCONV_CPU_ALGORITHM=blocked needs a CPU with AVX2 and FMA");
    TORCH_CHECK(blocked_ok, "FULLCONV_CPU_ALGORITHM=blocked supports float32/float64 computation, got ", dtype);
    return Algorithm::kBlocked;
  }
  if (!blocked_ok) return choose_unblocked(s);
  const int64_t last_stride = s.stride[kMaxSpatialDims - 1];
  // 1x1 kernels: nothing to skip; the tiles beat BLAS on the forward and grad_input (no column
  // copy), BLAS wins grad_weight (where ATen's does not: full_conv_backward_cpu)
  const bool one_tap = s.kernel_volume() == 1;
  bool blocked = false;
  const int64_t cin_g = s.in_channels_per_group(), cout_g = s.out_channels_per_group();
  // the rows kernel's inner loop runs over the problem's input channels: with fewer than
  // kRowsMinInputChannels (depthwise) the direct formulation is faster
  switch (pass) {
    case Pass::kForward:
      // (strided along the row, few output channels: the register tiles, most of their lanes
      // idle, still 1.3-3.9x faster than the GEMM path where a group has >= 2 input channels;
      // depthwise ones stay on the direct kernel; NOTES entry 40)
      blocked = cout_g >= kRowsBelowChannels ||
                (!one_tap && last_stride == 1 && (cin_g >= kRowsMinInputChannels || cin_g == 1)) ||
                (!one_tap && last_stride > 1 && cin_g >= 2);
      break;
    case Pass::kGradInput:  // the problem's input channels are the forward's output channels
      blocked = cin_g >= kRowsBelowChannels ? cout_g >= kRowsBelowChannels
                                            : (!one_tap && (cout_g >= kRowsMinInputChannels || cout_g == 1));
      break;
    case Pass::kGradWeight:
      blocked = !one_tap && cout_g >= kRowsBelowChannels;
      break;
  }
  return blocked ? Algorithm::kBlocked : choose_unblocked(s);
}

// Batched, contiguous view of a tensor in the compute dtype.
at::Tensor prepare(const at::Tensor& t, bool batched) {
  auto b = batched ? t : t.unsqueeze(0);
  return to_layout(b, compute_dtype(t.scalar_type()), at::MemoryFormat::Contiguous);
}

// ---- blocked formulation: channels-last tensors, register tiles (blocked_kernels.h) --------

// Batched 5-D view (any layout) in the compute dtype.
at::Tensor batched_5d(const at::Tensor& t, bool batched, int ndim) {
  return as_batched_5d(t.to(compute_dtype(t.scalar_type())), batched, ndim);
}

blocked::Problem forward_problem(const ConvShape& s) {
  blocked::Problem p;
  p.batch = s.batch;
  p.groups = s.groups;
  p.in_channels = s.in_channels;
  p.out_channels = s.out_channels;
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    p.in_size[i] = s.in_size[i];
    p.out_size[i] = s.out_size[i];
    p.kernel[i] = s.kernel[i];
    p.stride[i] = s.stride[i];
    p.dilation[i] = s.dilation[i];
    p.pad[i] = s.padding(i);
  }
  return p;
}

// Stride-1 grad_input as a problem of the same kind: grad_output correlated with the flipped
// kernel, input and output channels swapped, no padding (every tap real):
//   gx[i] = sum_k w[K-1-k] . gy[i + k*d]   since gy index i + p - (K-1-k)*d = i + k*d.
blocked::Problem grad_input_problem(const ConvShape& s) {
  blocked::Problem p = forward_problem(s);
  std::swap(p.in_channels, p.out_channels);
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    std::swap(p.in_size[i], p.out_size[i]);
    p.pad[i] = 0;
  }
  return p;
}

// The weight as [G, Cout_g, Cin_g, K0, K1, K2].
at::Tensor weight_6d(const ConvShape& s, const at::Tensor& w) {
  return w.reshape({s.groups, s.out_channels_per_group(), s.in_channels_per_group(), s.kernel[0],
                    s.kernel[1], s.kernel[2]});
}

// A weight [G, Cout', Cin', K0, K1, K2] (any strides; with `flip` every kernel dim read in
// reverse) packed for the blocked kernels as [G, OCB, K0, K1, K2, Cin', B], zero past Cout'.
// Read in place through its strides, in the order its layout favours (a contiguous() copy of
// grad_input's transposed view first cost 74 -> 58 us on a 1x64x8x8 grad_input, and a
// weight-sized temporary; see below).
// all_finite (optional): set to whether the packing saw every element and found them all
// finite (false where unknown: only the transposes below check).
template <typename scalar_t>
at::Tensor pack_blocked(int64_t B, const at::Tensor& w, bool flip, bool* all_finite = nullptr) {
  const int64_t G = w.size(0), cout = w.size(1), cin = w.size(2);
  const int64_t ktot = w.size(3) * w.size(4) * w.size(5);
  const int64_t ocb = ceil_div(cout, B);
  auto packed = at::empty({G, ocb, w.size(3), w.size(4), w.size(5), cin, B}, w.options());
  const scalar_t* src = w.const_data_ptr<scalar_t>();
  scalar_t* dst = packed.mutable_data_ptr<scalar_t>();
  const int64_t sg = w.stride(0), so = w.stride(1), si = w.stride(2);
  // source offset of each destination tap (flipping every dim reverses the flat tap)
  std::vector<int64_t> tap_off(ktot);
  for (int64_t tap = 0; tap < ktot; ++tap) {
    const int64_t t = flip ? ktot - 1 - tap : tap;
    const int64_t k2 = t % w.size(5), k1 = (t / w.size(5)) % w.size(4), k0 = t / (w.size(5) * w.size(4));
    tap_off[tap] = k0 * w.stride(3) + k1 * w.stride(4) + k2 * w.stride(5);
  }
  // Tasks of (group, block, kChunk input channels) over all taps.
  //  - Cout' the closer dim (the transposed view of grad_input): each (input channel, output
  //    channel) reads its taps as one run and writes them Cin'*B apart;
  //  - otherwise the block's B x kChunk x ktot weights are read output channel by output
  //    channel. With taps in order and input channels ktot apart (the forward's contiguous
  //    weight; strided grad_input's taps of one output channel) that is one run of
  //    kChunk * ktot elements each, which blocked::transpose_to_runs turns into the runs of B
  //    at each (tap, input channel); otherwise (stride-1 grad_input's flipped taps where a
  //    group has one input or output channel) they go through a buffer of B * kChunk * ktot
  //    elements (16 KiB of float32 while B * ktot <= 4096, more for larger 3-D kernels, where
  //    kChunk is 1), written tap by tap. Reading tap by tap instead fetched each source line
  //    once per tap from beyond the caches (~1 ns per element: 45 % of a 1x512x7x7 forward,
  //    3x3, on one thread).
  const bool cout_fast = cout > 1 && cin > 1 && so < si;
  const int64_t kChunk = cout_fast ? 16 : std::max<int64_t>(1, std::min<int64_t>(cin, 4096 / (B * ktot)));
  const int64_t chunks = ceil_div(cin, kChunk);
  bool taps_in_order = true;  // taps read as one run per (output, input) channel
  for (int64_t tap = 0; tap < ktot; ++tap) taps_in_order = taps_in_order && tap_off[tap] == tap;
  const bool runs = !cout_fast && taps_in_order && (si == ktot || cin == 1);
  const bool buffered = !cout_fast && !runs;
  std::atomic<bool> nonfinite{false};
  at::parallel_for(0, G * ocb * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> tile(buffered ? B * kChunk * ktot : 0);
    std::vector<int64_t> dst_off(runs ? kChunk * ktot : 0);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t chunk = t % chunks, gb = t / chunks;
      const int64_t blk = gb % ocb, g = gb / ocb;
      const int64_t ci0 = chunk * kChunk, n = std::min(cin, ci0 + kChunk) - ci0;
      const int64_t valid = std::min(B, cout - blk * B);
      const scalar_t* base = src + g * sg + (blk * B) * so + ci0 * si;
      // the run of B at (tap, ci0 + ci): zero past the valid output channels
      auto run = [&](int64_t tap, int64_t ci) { return dst + ((gb * ktot + tap) * cin + ci0 + ci) * B; };
      for (int64_t tap = 0; tap < ktot; ++tap)
        for (int64_t ci = 0; ci < n; ++ci) {
          scalar_t* to = run(tap, ci);
          std::fill(to + valid, to + B, scalar_t(0));
          if (runs) dst_off[ci * ktot + tap] = to - dst;
        }
      if (runs) {
        if (!blocked::transpose_to_runs<scalar_t>(base, so, valid, n * ktot, dst_off.data(), dst))
          nonfinite.store(true, std::memory_order_relaxed);
      } else if (cout_fast) {
        for (int64_t ci = 0; ci < n; ++ci)
          for (int64_t b = 0; b < valid; ++b) {
            const scalar_t* from = base + ci * si + b * so;
            scalar_t* to = run(0, ci) + b;
            for (int64_t tap = 0; tap < ktot; ++tap) to[tap * cin * B] = from[tap_off[tap]];
          }
      } else {
        for (int64_t b = 0; b < valid; ++b)
          for (int64_t ci = 0; ci < n; ++ci) {
            const scalar_t* from = base + b * so + ci * si;
            scalar_t* row = tile.data() + (b * n + ci) * ktot;
            for (int64_t tap = 0; tap < ktot; ++tap) row[tap] = from[tap_off[tap]];
          }
        for (int64_t tap = 0; tap < ktot; ++tap)
          for (int64_t ci = 0; ci < n; ++ci) {
            scalar_t* to = run(tap, ci);
            const scalar_t* col = tile.data() + ci * ktot + tap;
            for (int64_t b = 0; b < valid; ++b) to[b] = col[b * n * ktot];
          }
      }
    }
  });
  if (all_finite != nullptr) *all_finite = runs && !nonfinite.load();
  return packed;
}

// Element strides of a 5-D tensor as the blocked problem's input or output.
// From a 5-D input, or a 6-D group-blocked one [G, N, S0, S1, S2, Cg] (group_blocked_copy).
void set_input_strides(blocked::Problem& p, const at::Tensor& t) {
  const bool grouped = t.dim() == 6;
  p.in_stride_g = grouped ? t.stride(0) : -1;
  p.in_stride_n = t.stride(grouped ? 1 : 0);
  p.in_stride_c = t.stride(grouped ? 5 : 1);
  for (int i = 0; i < kMaxSpatialDims; ++i) p.in_stride[i] = t.stride(2 + i);
}
void set_output_strides(blocked::Problem& p, const at::Tensor& t5) {
  p.out_stride_n = t5.stride(0);
  p.out_stride_c = t5.stride(1);
  for (int i = 0; i < kMaxSpatialDims; ++i) p.out_stride[i] = t5.stride(2 + i);
}

// Whether a 5-D tensor's copies into channel blocks (channel_blocked, channels_last_copy) take
// blocked::gather_channel_blocks: float32, its spatial dims contiguous (one run of D*H*W
// elements per sample and channel; dims of size 1 aside), a CPU with AVX2, and
// FULLCONV_CPU_GATHER=auto (aten: ATen's copies, to time both). ATen's permuted copy of such
// tensors ran at 4-25 GB/s here (a 30 MB 32-channel gradient: 2.6-8.4 ms, a clone 1.2).
// (FULLCONV_CPU_GATHER also governs to_layout's copies.)
bool gather_setting() { return env_setting("FULLCONV_CPU_GATHER", "auto", {"auto", "aten"}) == "auto"; }

bool gather_applies(const at::Tensor& t5) {
  if (!gather_setting()) return false;
  if (t5.scalar_type() != at::kFloat || t5.numel() == 0 || blocked_isa() == blocked::Isa::kNone) return false;
  int64_t expected = 1;
  for (int i = 4; i >= 2; --i) {
    if (t5.size(i) != 1 && t5.stride(i) != expected) return false;
    expected *= t5.size(i);
  }
  return true;
}

// gather_channel_blocks of t5 (gather_applies) into `out`, [G, CB, N, S0, S1, S2, block] in memory
// order, over G * CB * N tasks.
void gather_into(const at::Tensor& t5, int64_t groups, int64_t block, at::Tensor& out) {
  const int64_t n = t5.size(0), cg = t5.size(1) / groups;
  const int64_t S = t5.size(2) * t5.size(3) * t5.size(4);
  const float* src = t5.const_data_ptr<float>();
  float* dst = out.mutable_data_ptr<float>();
  count_call(KernelCount::kGather);
  at::parallel_for(0, groups * ceil_div(cg, block) * n, 1, [&](int64_t begin, int64_t end) {
    blocked::gather_channel_blocks<float>(src, t5.stride(0), t5.stride(1), n, groups, cg, S, block, dst, begin, end);
  });
}

// A 5-D tensor copied channels-last (ChannelsLast3d: [N][S][C], one group and one block of all
// channels), through gather_channel_blocks where it applies and there is a sample for every
// thread (its tasks are samples), else ATen's copy.
at::Tensor channels_last_copy(const at::Tensor& t5) {
  if (!gather_applies(t5) || t5.size(0) < at::get_num_threads())
    return to_layout(t5, t5.scalar_type(), at::MemoryFormat::ChannelsLast3d);
  auto out = at::empty(t5.sizes(), t5.options().memory_format(at::MemoryFormat::ChannelsLast3d));
  gather_into(t5, 1, t5.size(1), out);
  return out;
}

}  // namespace

at::Tensor to_layout(const at::Tensor& t, at::ScalarType dtype, at::MemoryFormat fmt) {
  auto flip_layout = [&](const at::Tensor& src) {
    const int64_t N = src.size(0), C = src.size(1), S = src.numel() / (N * C);
    const bool to_cl = fmt != at::MemoryFormat::Contiguous;
    const int64_t rows = to_cl ? C : S, cols = to_cl ? S : C;  // of each sample's matrix
    auto out = at::empty(src.sizes(), src.options().memory_format(fmt));
    count_call(KernelCount::kTranspose);
    AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "fullconv_to_layout", [&] {
      const scalar_t* sp = src.const_data_ptr<scalar_t>();
      scalar_t* dp = out.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, blocked::transpose_task_count(N, rows, cols), 1, [&](int64_t begin, int64_t end) {
        blocked::transpose_matrices<scalar_t>(sp, C * S, cols, N, rows, cols, dp, C * S, rows, begin, end);
      });
    });
    return out;
  };
  // NCHW to channels-last or back, of a tensor dense in the one layout (not in both: one
  // channel or one position is either)
  auto changes = [&](const at::Tensor& src) {
    if ((src.dim() != 4 && src.dim() != 5) || src.numel() == 0 || src.is_contiguous(fmt)) return false;
    const auto cl = src.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::ChannelsLast3d;
    if (fmt == at::MemoryFormat::Contiguous) return src.is_contiguous(cl);
    return fmt == cl && src.is_contiguous();
  };
  auto vector_dtype = [](at::ScalarType d) { return d == at::kFloat || d == at::kDouble; };
  if (t.is_cpu() && gather_setting() && changes(t)) {
    if (vector_dtype(t.scalar_type())) return flip_layout(t).to(dtype);
    if (vector_dtype(dtype)) return flip_layout(t.to(dtype));
  }
  return t.to(dtype).contiguous(fmt);
}

namespace {

at::Tensor channel_blocked(const at::Tensor& t5, int64_t groups, int64_t block);

// FULLCONV_CPU_GROUPED=auto (default: group_blocked_copy where blocked_input copies a grouped
// input; the forward tiles' tasks groups-inner for channels-last outputs of several groups) or
// off (channels-last copies and group-major tasks, as for one group; to time the two).
bool grouped_setting() { return env_setting("FULLCONV_CPU_GROUPED", "auto", {"auto", "off"}) == "auto"; }

// A 5-D input [N, C, S0, S1, S2] (any layout, C = groups x Cg) copied group by group as
// [G, N, S0, S1, S2, Cg]: each group's channels adjacent (channel_blocked with a block of a
// whole group), for blocked::Problem::in_stride_g.
at::Tensor group_blocked_copy(const at::Tensor& t5, int64_t groups) {
  count_call(KernelCount::kGroupBlocked);
  return channel_blocked(t5, groups, t5.size(1) / groups).squeeze(1);
}

// The blocked kernels read any input layout in place. A channels-last copy pays off where
// rows of products are short (few channels per group) or where, with unit dilation and one
// group, it lets a tile's kernel row run as one long (tap, channel) loop and the copy is
// small next to the products each element takes part in (`macs_per_element`); measured in
// benchmarks/NOTES.md, entry 8. `t5`: the 5-D input of a blocked problem with
// `channels_per_group` channels per group.
at::Tensor blocked_input(const at::Tensor& t5, bool rows, int64_t channels_per_group, int64_t groups,
                         int64_t dilation, double macs_per_element, int ndim) {
  // the rows kernel loads consecutive positions of a row as vectors
  if (rows) return t5.stride(4) == 1 || t5.size(4) == 1 ? t5 : to_layout(t5, t5.scalar_type(), at::MemoryFormat::Contiguous);
  // (tests force both ways)
  const std::string mode = env_setting("FULLCONV_CPU_BLOCKED_INPUT", "auto", {"auto", "copy", "inplace"});
  const bool group_blocked = grouped_setting();  // (read, so checked, on every call)
  const bool mergeable = dilation == 1 && (groups == 1 || group_blocked);
  // 3-D with at most 32 channels per group: the in-place reads (one broadcast a channel apart,
  // a D*H*W stride) and the unmerged taps (27 short runs per 3x3x3 tile instead of 9) cost
  // more than the copy where each input element meets >= 256 products (entry 38: 16 and 32
  // channels, 8^3-24^3 maps, stride 1: 1.2-1.4x; stride 2, 216 products: the copy 12% slower)
  const bool copy = mode == "copy" ||
      (mode == "auto" && (channels_per_group < 16 || (mergeable && macs_per_element >= 1024) ||
                          (mergeable && ndim == 3 && channels_per_group <= 32 && macs_per_element >= 256)));
  // Several groups: channels-last interleaves them, so a tile's (tap, channel) runs stop at
  // every group's channels; a copy of each group's channels by themselves ([G][N][S][Cg]) makes
  // a kernel row's taps one run (unit dilation), channels-last inputs too (entry 40)
  if (copy && groups > 1 && channels_per_group > 1 && mergeable)
    return group_blocked_copy(t5, groups);
  if (t5.stride(1) == 1 || t5.size(1) == 1) return t5;
  return copy ? channels_last_copy(t5) : t5;
}

int64_t max_dilation(const ConvShape& s) {
  return *std::max_element(s.dilation, s.dilation + kMaxSpatialDims);
}

// Products each input element of the forward takes part in (about: edges aside).
double forward_reuse(const ConvShape& s) {
  double r = double(s.out_channels_per_group()) * s.kernel_volume();
  for (int i = 0; i < kMaxSpatialDims; ++i) r /= double(s.stride[i]);
  return r;
}

// The register tiles' output channels for the blocked forward and grad_weight:
// blocked::tile_block, or with FULLCONV_CPU_BLOCKED_TILE=narrow the two-vector tiles everywhere
// (to time the four-vector AVX-512 tiles against them; an invalid value is a ValueError);
// `grad_weight_isa` (grad_weight's tiles): set to the build they run on, the block being
// blocked::grad_weight_block's (one vector for few channels; narrow: two, on `isa`).
template <typename scalar_t>
int64_t tile_block_setting(blocked::Isa isa, int64_t out_channels_per_group, blocked::Isa* grad_weight_isa = nullptr) {
  const std::string mode = env_setting("FULLCONV_CPU_BLOCKED_TILE", "auto", {"auto", "narrow"});
  if (grad_weight_isa != nullptr) *grad_weight_isa = isa;
  if (mode == "narrow") return blocked::oc_block<scalar_t>(isa);
  return grad_weight_isa != nullptr ? blocked::grad_weight_block<scalar_t>(isa, out_channels_per_group, grad_weight_isa)
                                    : blocked::tile_block<scalar_t>(isa, out_channels_per_group);
}

// Runs a blocked problem: `in` 5-D in the compute dtype (from blocked_input, for the same
// kernel choice), `w6` the problem's weight [G, Cout', Cin', K0, K1, K2] (any strides; taps
// read flipped when `flip`); the output strides of `p` must be set.
template <typename scalar_t>
void blocked_forward(blocked::Isa isa, blocked::Problem p, const at::Tensor& in, const at::Tensor& w6, bool flip,
                     const at::Tensor* bias, bool accumulate, scalar_t* out, bool* weight_finite = nullptr) {
  set_input_strides(p, in);
  // a channels-last input of a depthwise layer (blocked_input kept it so): vectors across
  // channels, at any stride (FULLCONV_CPU_DEPTHWISE_CL=off: never, also where a forced blocked
  // path keeps a channels-last input at strides the row kernel does not take)
  const bool depthwise_cl = p.in_channels_per_group() == 1 && p.out_channels_per_group() == 1 && p.in_channels > 1 &&
                            p.in_stride_c == 1 && p.in_stride[2] != 1 && p.in_size[2] > 1 && depthwise_cl_setting();
  const bool depthwise =
      depthwise_cl || depthwise_kernel(p.in_channels_per_group(), p.out_channels_per_group(), p.stride[2]);
  const bool rows = !depthwise && rows_kernel(p.out_channels_per_group(), p.stride[2]);
  TORCH_INTERNAL_ASSERT(!(rows || depthwise) || depthwise_cl || p.in_stride[2] == 1 || p.in_size[2] == 1);
  TORCH_INTERNAL_ASSERT(in.dim() == 5 || !(rows || depthwise || in.scalar_type() == at::kBFloat16));
  if ((rows || depthwise) && !depthwise_cl) p.in_stride[2] = 1;
  const int64_t block = depthwise ? 1
                        : rows    ? blocked::kRowsBlock
                                  : tile_block_setting<scalar_t>(isa, p.out_channels_per_group());
  // FULLCONV_CPU_TILE_POSITIONS=auto (default: one-vector tiles of blocked::kWidePositions
  // positions) or 6 (as the wider tiles), to time them side by side
  p.one_vector_positions =
      env_setting("FULLCONV_CPU_TILE_POSITIONS", "auto", {"auto", "6"}) == "6" ? blocked::kTilePositions
                                                                                : blocked::kWidePositions;
  // several groups into a channels-last output: a row's groups together (their channels share
  // cache lines that group-major tasks wrote in part, each, across the whole output)
  p.groups_inner = p.groups > 1 && p.out_stride_c == 1 && grouped_setting();
  if (in.scalar_type() == at::kBFloat16) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      TORCH_INTERNAL_ASSERT(!rows && !depthwise && p.in_stride_c == 1 && p.in_channels_per_group() % 2 == 0 &&
                            isa == blocked::Isa::kAvx512);
      // the float32 packing, then each pair of input channels side by side per output channel
      const at::Tensor w32 = pack_blocked<float>(block, w6, flip, weight_finite);
      auto sizes = w32.sizes().vec();  // [G, OCB, K0, K1, K2, Cin', B]
      const int64_t cin = sizes[5];
      sizes[5] = cin / 2;
      sizes.insert(sizes.begin() + 6, 2);
      const at::Tensor w_pairs = w32.view(sizes).transpose(-1, -2).to(at::kBFloat16).contiguous();
      const auto* ip = reinterpret_cast<const blocked::Bf16*>(in.const_data_ptr<at::BFloat16>());
      const auto* wp = reinterpret_cast<const blocked::Bf16*>(w_pairs.const_data_ptr<at::BFloat16>());
      const float* bp = bias != nullptr ? bias->const_data_ptr<float>() : nullptr;
      count_call(KernelCount::kBf16Tiles);
      at::parallel_for(0, blocked::forward_task_count(p, block), 1, [&](int64_t begin, int64_t end) {
        blocked::forward_bf16(p, ip, wp, bp, accumulate, out, begin, end, block);
      });
      return;
    }
    TORCH_INTERNAL_ASSERT(false, "bfloat16 operands with a float64 output");
  }
  at::Tensor w_packed = pack_blocked<scalar_t>(block, w6, flip, weight_finite);
  if (depthwise_cl) w_packed = w_packed.view({p.out_channels, p.kernel_volume()}).t().contiguous();  // [K.., C]
  const scalar_t* ip = in.const_data_ptr<scalar_t>();
  const scalar_t* wp = w_packed.const_data_ptr<scalar_t>();
  const scalar_t* bp = bias != nullptr ? bias->const_data_ptr<scalar_t>() : nullptr;
  if (depthwise) {
    // FULLCONV_CPU_DEPTHWISE_ROWS=2 (default: two output rows per row-kernel call) or 1;
    // FULLCONV_CPU_DEPTHWISE_CHANNELS=auto (default: blocks of output channels per task, their
    // planes computed together) or 1 (a plane at a time); to time them side by side
    p.depthwise_rows = env_setting("FULLCONV_CPU_DEPTHWISE_ROWS", "2", {"1", "2"}) == "1" ? 1 : 2;
    p.depthwise_channels =
        env_setting("FULLCONV_CPU_DEPTHWISE_CHANNELS", "auto", {"auto", "1"}) == "1" ? 1 : blocked::depthwise_channel_block(isa);
    p.depthwise_channels_last = depthwise_cl;
    p.depthwise_cl_exact_tiles = depthwise_cl_mode() == "auto";
  }
  count_call(depthwise_cl ? KernelCount::kDepthwiseCl
             : depthwise  ? KernelCount::kDepthwise
             : rows       ? KernelCount::kRows
                          : KernelCount::kTiles);
  const int64_t tasks = depthwise ? blocked::depthwise_task_count(p) : blocked::forward_task_count(p, block);
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    if (depthwise) blocked::depthwise_forward<scalar_t>(isa, p, ip, wp, bp, accumulate, out, begin, end);
    else if (rows) blocked::rows_forward<scalar_t>(isa, p, ip, wp, bp, accumulate, out, begin, end);
    else blocked::forward<scalar_t>(isa, p, ip, wp, bp, accumulate, out, begin, end, block);
  });
}

// Strided grad_input, one residue class of input positions at a time (conv_shape.h): the
// inputs i = r + s*j of a class meet exactly the taps k with tap_residue(k) == r, reading
// grad_output at tap_output_start(r, k) + j. Per class this is a stride-1 correlation of
// grad_output with the class's taps in reverse order (dilation: the step of
// tap_output_start between them; padding: minus the first start, an offset), written into
// every s-th input position. Inputs that no tap reaches get zero.
template <typename scalar_t>
void blocked_grad_input_strided(blocked::Isa isa, const ConvShape& s, const at::Tensor& gy5, const at::Tensor& w,
                                at::Tensor& gx5) {
  struct DimClass {
    int64_t r;
    std::vector<int64_t> taps;  // descending
  };
  std::vector<DimClass> per_dim[kMaxSpatialDims];
  bool all_reached = true;
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    for (int64_t r = 0; r < std::min(s.stride[i], s.in_size[i]); ++r) {
      DimClass c{r, {}};
      for (int64_t k = s.kernel[i] - 1; k >= 0; --k)
        if (tap_residue(k, s.kernel[i], s.stride[i], s.dilation[i]) == r) c.taps.push_back(k);
      if (c.taps.empty()) all_reached = false;
      else per_dim[i].push_back(std::move(c));
    }
  }
  if (!all_reached) gx5.zero_();
  const auto w6 = weight_6d(s, w);
  scalar_t* gxp = gx5.mutable_data_ptr<scalar_t>();
  for (const auto& c0 : per_dim[0])
    for (const auto& c1 : per_dim[1])
      for (const auto& c2 : per_dim[2]) {
        const DimClass* dc[3] = {&c0, &c1, &c2};
        blocked::Problem p = forward_problem(s);
        std::swap(p.in_channels, p.out_channels);
        auto taps = w6;
        for (int i = 0; i < kMaxSpatialDims; ++i) {
          const auto& kk = dc[i]->taps;
          const int64_t K = s.kernel[i], st = s.stride[i], d = s.dilation[i];
          const int64_t first = tap_output_start(dc[i]->r, kk[0], K, st, d);
          p.in_size[i] = s.out_size[i];
          p.out_size[i] = residue_count(s.in_size[i], st, dc[i]->r);
          p.kernel[i] = static_cast<int64_t>(kk.size());
          p.stride[i] = 1;
          p.dilation[i] = kk.size() > 1 ? tap_output_start(dc[i]->r, kk[1], K, st, d) - first : 1;
          p.pad[i] = -first;
          taps = taps.index_select(3 + i, at::tensor(kk, at::kLong));
        }
        set_output_strides(p, gx5);
        for (int i = 0; i < kMaxSpatialDims; ++i) p.out_stride[i] *= s.stride[i];
        const int64_t offset = c0.r * gx5.stride(2) + c1.r * gx5.stride(3) + c2.r * gx5.stride(4);
        blocked_forward<scalar_t>(isa, p, gy5, taps.transpose(1, 2), false, nullptr, false, gxp + offset);
      }
}

// [N, C, S0, S1, S2] (any layout; C = groups x Cg) -> [G, CB, N, S0, S1, S2, block] with
// CB = ceil(Cg / block), zero past each group's channels: one copy.
at::Tensor channel_blocked(const at::Tensor& t5, int64_t groups, int64_t block) {
  const int64_t n = t5.size(0), cg = t5.size(1) / groups, cb = ceil_div(cg, block);
  auto out = at::empty({groups, cb, n, t5.size(2), t5.size(3), t5.size(4), block}, t5.options());
  if (gather_applies(t5)) {  // NCHW-like float32: register transposes (NOTES 39)
    gather_into(t5, groups, block, out);
    return out;
  }
  const auto v = t5.reshape({n, groups, cg, t5.size(2), t5.size(3), t5.size(4)})
                     .permute({1, 0, 3, 4, 5, 2});  // [G, N, S0, S1, S2, Cg]
  auto dst = out.permute({0, 2, 3, 4, 5, 1, 6});  // [G, N, S0, S1, S2, CB, block]
  if (cb * block == cg) {
    dst.copy_(v.unflatten(-1, {cb, block}));
  } else {
    dst.copy_(at::constant_pad_nd(v, {0, cb * block - cg}).unflatten(-1, {cb, block}));
  }
  return out;
}

// grad_weight of the forward problem, in the weight's layout [Cout, Cin_g, *kernel].
// `gy5`, `x5`: batched 5-D tensors in the compute dtype, any layout.
template <typename scalar_t>
at::Tensor blocked_grad_weight(blocked::Isa isa, const ConvShape& s, const at::Tensor& gy5, const at::Tensor& x5,
                               at::IntArrayRef weight_sizes, at::MemoryFormat weight_format) {
  const auto p = forward_problem(s);
  blocked::Isa tile_isa = isa;
  const int64_t B = tile_block_setting<scalar_t>(isa, p.out_channels_per_group(), &tile_isa);
  const int64_t BI = blocked::grad_weight_input_block<scalar_t>(tile_isa, B, s.in_channels_per_group());
  const auto gy_blocked = channel_blocked(gy5, s.groups, B);
  const auto x_blocked = channel_blocked(x5, s.groups, BI);
  // written in place in the weight's layout (5-D view with leading kernel dims of size 1)
  auto gw = at::empty(weight_sizes, gy5.options().memory_format(weight_format));
  const auto gw5 = as_5d(gw, s.ndim);
  blocked::WeightStrides ws;
  ws.out_channel = gw5.stride(0);
  ws.in_channel = gw5.stride(1);
  for (int i = 0; i < kMaxSpatialDims; ++i) ws.kernel[i] = gw5.stride(2 + i);
  const scalar_t* gyp = gy_blocked.const_data_ptr<scalar_t>();
  const scalar_t* xp = x_blocked.const_data_ptr<scalar_t>();
  scalar_t* gwp = gw.mutable_data_ptr<scalar_t>();
  // Samples in chunks whose slices of one oc block and one input-channel block stay in a
  // core's L2 while a thread runs the taps of that pair (the chunks are summed in order).
  const int64_t sample_bytes = static_cast<int64_t>(sizeof(scalar_t)) *
      (B * s.out_spatial() + BI * s.in_spatial());
  const int64_t chunk = std::clamp<int64_t>(kGradWeightChunkBytes / std::max<int64_t>(sample_bytes, 1), 1, s.batch);
  count_call(KernelCount::kGradWeightTiles);
  for (int64_t n0 = 0; n0 < s.batch; n0 += chunk) {
    const int64_t n1 = std::min(s.batch, n0 + chunk);
    at::parallel_for(0, blocked::grad_weight_task_count(p, B, BI), 1, [&](int64_t begin, int64_t end) {
      blocked::grad_weight<scalar_t>(tile_isa, p, gyp, xp, n0, n1, n0 > 0, gwp, ws, begin, end, B, BI);
    });
  }
  return gw;
}

// Forward with an optional fused epilogue: the output starts as bias + the centred residual,
// the kernels accumulate the convolution into it, and ReLU runs over it once at the end.
// (The blocked kernels add the bias in their tiles and the residual is added after them.)
at::Tensor full_conv_cpu_impl(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, const at::Tensor* residual,
                              at::IntArrayRef stride, at::IntArrayRef dilation, int64_t groups,
                              at::IntArrayRef residual_padding, bool relu, const char* op_name) {
  const auto s = check_and_make_shape(input, weight, bias, stride, dilation, groups, op_name);
  const bool batched = input.dim() == weight.dim();
  if (residual != nullptr)
    check_residual(*residual, output_shape(s, batched), residual_padding, input, op_name);
  // A kernel of one tap has no padding (d*(k-1) = 0 in every dim): it is an ordinary
  // convolution, which ATen's (oneDNN's) runs faster than the tiles here in float32/float64,
  // strided ones above all (benchmarks/NOTES.md, entry 20), and in bfloat16 where the CPU has
  // AVX512_BF16 (1.1-2.5x; entry 40; without it ATen's bfloat16 convolution is not oneDNN's).
  // FULLCONV_CPU_ALGORITHM other than auto keeps fullconv's kernels.
  if (residual == nullptr && s.kernel_volume() == 1 && cpu_algorithm_setting() == "auto" &&
      one_tap_on_aten(input.scalar_type()) && input.numel() > 0) {
    return one_tap_convolution(input, weight, bias, s, stride, dilation, groups);
  }
  const auto dtype = compute_dtype(input.scalar_type());
  Algorithm algo = choose_algorithm(s, dtype, Pass::kForward);
  const bool depthwise_cl =
      depthwise_channels_last_input(as_batched_5d(input, batched, s.ndim), s.in_channels_per_group(),
                                    s.out_channels_per_group());
  // depthwise layers with a channels-last input run the channels-vector kernel at any stride
  // (choose_algorithm, blind to layouts, gives strided ones the direct kernel: 0.1-0.15x oneDNN)
  if (algo != Algorithm::kBlocked && cpu_algorithm_setting() == "auto" && blocked_isa() != blocked::Isa::kNone &&
      (dtype == at::kFloat || dtype == at::kDouble) && s.kernel_volume() > 1 && depthwise_cl)
    algo = Algorithm::kBlocked;
  const bool blocked_path = algo == Algorithm::kBlocked;
  const bool bf16 = blocked_path && input.scalar_type() == at::kBFloat16 &&
                    bf16_tiles(blocked_isa(), s.in_channels_per_group(), s.out_channels_per_group(),
                               s.stride[kMaxSpatialDims - 1]);
  const auto x = bf16 ? bf16_operand(input, batched, s.ndim)
                 : blocked_path ? blocked_input(batched_5d(input, batched, s.ndim),
                                             row_vector_kernel(s.in_channels_per_group(), s.out_channels_per_group(),
                                                               s.stride[kMaxSpatialDims - 1]) &&
                                                 !depthwise_cl,
                                             s.in_channels_per_group(), s.groups, max_dilation(s), forward_reuse(s),
                                             s.ndim)
                              : prepare(input, batched);
  const auto w = weight.to(compute_dtype(weight.scalar_type())).contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const auto out_format = output_memory_format(input, weight);
  at::Tensor y5, y;
  if (blocked_path) {
    // written in place in the layout returned: no layout copy of the output
    y = at::empty(output_shape(s, true),
                  x.options().dtype(dtype).memory_format(batched ? out_format : at::MemoryFormat::Contiguous));
    y5 = as_5d(y, s.ndim);
  } else {
    y = at::empty(output_shape(s, true), x.options());
  }
  // the blocked kernels write every output element themselves, bias included (the residual
  // is added afterwards: cheaper than prefilling the output and re-reading it in the tiles)
  const bool tiles_own_output = blocked_path && x.numel() > 0;
  at::Tensor b;
  if (has_bias) b = bias->to(dtype).contiguous();
  if (!tiles_own_output) {
    if (has_bias) {
      std::vector<int64_t> bshape(y.dim(), 1);
      bshape[1] = s.out_channels;
      y.copy_(b.view(bshape).expand_as(y));
    } else {
      y.zero_();
    }
    if (residual != nullptr)
      residual_region(y, residual_padding).add_(batched ? *residual : residual->unsqueeze(0));
  }
  bool weight_finite = false;  // known finite (seen so by the blocked forward's packing)
  if (x.numel() > 0) {
    if (blocked_path) {
      AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "full_conv_cpu_blocked", [&] {
        const auto isa = blocked_isa();
        auto p = forward_problem(s);
        set_output_strides(p, y5);
        blocked_forward<scalar_t>(isa, p, x, weight_6d(s, w), false, tiles_own_output && has_bias ? &b : nullptr,
                                  !tiles_own_output, y5.mutable_data_ptr<scalar_t>(), &weight_finite);
      });
    } else if (algo == Algorithm::kDirect) {
      AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "full_conv_cpu_direct", [&] {
        direct_forward_kernel<scalar_t>(s, x, w, y);
      });
    } else {
      const auto plan = make_plan(s);
      const auto wmats = class_weights(plan, w);
      AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "full_conv_cpu", [&] {
        forward_kernel<scalar_t>(plan, x, wmats, y);
      });
    }
  }
  if (tiles_own_output && residual != nullptr)
    residual_region(y, residual_padding).add_(batched ? *residual : residual->unsqueeze(0));
  if (!weight_finite) apply_nonfinite_weight_padding(y, weight, s);  // (else a second pass over the weight)
  if (relu) y.relu_();
  if (!batched) y = y.squeeze(0);
  return to_layout(y, input.scalar_type(), out_format);
}

at::Tensor full_conv_cpu(const at::Tensor& input, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                         at::IntArrayRef dilation, int64_t groups) {
  return full_conv_cpu_impl(input, weight, bias, nullptr, stride, dilation, groups, {}, false,
                            "full_conv");
}

at::Tensor full_conv_residual_cpu(const at::Tensor& input, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, const at::Tensor& residual,
                                  at::IntArrayRef stride, at::IntArrayRef dilation, int64_t groups,
                                  at::IntArrayRef residual_padding, bool relu) {
  return full_conv_cpu_impl(input, weight, bias, &residual, stride, dilation, groups,
                            residual_padding, relu, "full_conv_residual");
}

// out = input + centred residual (+ ReLU), one pass over the output.
at::Tensor padded_add_cpu(const at::Tensor& input, const at::Tensor& residual,
                          at::IntArrayRef residual_padding, bool relu) {
  check_residual(residual, input.sizes(), residual_padding, input, "padded_add");
  const auto geo = residual_geometry(input.sizes(), residual, residual_padding);
  const int64_t* out_sz = geo.out_size;
  const int64_t* res_sz = geo.res_size;
  const int64_t* pad = geo.pad;
  const int64_t planes = geo.planes;
  const auto x = input.contiguous();
  const auto r = residual.contiguous();
  auto out = at::empty_like(x, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "padded_add_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* rp = r.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    const int64_t rows = planes * out_sz[0] * out_sz[1];
    at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t i1 = row % out_sz[1], i0 = (row / out_sz[1]) % out_sz[0], plane = row / (out_sz[1] * out_sz[0]);
        const scalar_t* xr = xp + row * out_sz[2];
        scalar_t* orow = op + row * out_sz[2];
        const int64_t r0 = i0 - pad[0], r1 = i1 - pad[1];
        const bool row_inside = 0 <= r0 && r0 < res_sz[0] && 0 <= r1 && r1 < res_sz[1];
        const scalar_t* rr = row_inside ? rp + ((plane * res_sz[0] + r0) * res_sz[1] + r1) * res_sz[2] - pad[2] : nullptr;
        for (int64_t i2 = 0; i2 < out_sz[2]; ++i2) {
          acc_t v = static_cast<acc_t>(xr[i2]);
          if (row_inside && i2 >= pad[2] && i2 < pad[2] + res_sz[2]) v += static_cast<acc_t>(rr[i2]);
          orow[i2] = static_cast<scalar_t>(relu ? (v > acc_t(0) ? v : (v != v ? v : acc_t(0))) : v);
        }
      }
    });
  });
  return out.contiguous(input.suggest_memory_format());
}

// grad_input and/or grad_weight with the GEMM or direct formulation (undefined when not
// requested). `gy` batched, contiguous, compute dtype.
std::pair<at::Tensor, at::Tensor> unblocked_backward(const ConvShape& s, Algorithm algo,
                                                     const at::Tensor& gy, const at::Tensor& input,
                                                     const at::Tensor& weight, const at::Tensor& w,
                                                     bool batched, bool want_gx, bool want_gw) {
  at::Tensor grad_input, grad_weight;
  if (algo == Algorithm::kDirect) {
    if (want_gx) {
      auto gx = at::zeros({s.batch, s.in_channels, s.in_spatial()}, gy.options());
      if (gy.numel() > 0 && s.in_channels > 0) {
        AT_DISPATCH_FLOATING_TYPES(gx.scalar_type(), "full_conv_grad_input_cpu_direct", [&] {
          direct_grad_input_kernel<scalar_t>(s, gy, w, gx);
        });
      }
      grad_input = finish_grad_input(gx, input, batched);
    }
    if (want_gw) {
      auto gw = at::zeros(weight.sizes(), gy.options());
      if (gy.numel() > 0 && weight.numel() > 0) {
        const auto x = prepare(input, batched);
        AT_DISPATCH_FLOATING_TYPES(gw.scalar_type(), "full_conv_grad_weight_cpu_direct", [&] {
          direct_grad_weight_kernel<scalar_t>(s, gy, x, gw);
        });
      }
      grad_weight = gw.to(weight.scalar_type()).contiguous(weight.suggest_memory_format());
    }
    return {grad_input, grad_weight};
  }
  const auto plan = make_plan(s);
  const int64_t cout_g = s.out_channels_per_group(), cin_g = s.in_channels_per_group();
  at::Tensor gx;
  std::vector<at::Tensor> gw_mats;
  if (want_gx)
    gx = at::zeros({s.batch, s.in_channels, s.in_spatial()}, gy.options());
  if (want_gw)
    for (const auto& rc : plan.classes)
      gw_mats.push_back(at::zeros({s.groups, static_cast<int64_t>(rc.taps.size()) * cout_g, cin_g}, gy.options()));
  if (gy.numel() > 0 && cin_g > 0) {
    const auto wmats = class_weights(plan, w);
    const auto x = want_gw ? prepare(input, batched) : at::Tensor();
    // grad_input needs every input written: the kernel assigns the inputs of each class, the
    // zeros above cover the inputs no tap reaches (stride larger than the kernel's reach)
    AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "full_conv_backward_cpu", [&] {
      backward_kernel<scalar_t>(plan, gy, x, wmats, want_gx ? &gx : nullptr,
                                want_gw ? &gw_mats : nullptr);
    });
  }
  if (want_gx) grad_input = finish_grad_input(gx, input, batched);
  if (want_gw) {
    // [G, Ktot, Cout_g, Cin_g] -> weight layout [Cout, Cin_g, *kernel]
    auto gw = at::zeros({s.groups, s.kernel_volume(), cout_g, cin_g}, gy.options());
    for (size_t ci = 0; ci < plan.classes.size(); ++ci) {
      const auto& rc = plan.classes[ci];
      gw.index_copy_(1, at::tensor(rc.taps, at::kLong),
                     gw_mats[ci].view({s.groups, static_cast<int64_t>(rc.taps.size()), cout_g, cin_g}));
    }
    grad_weight = gw.permute({0, 2, 3, 1})
                      .reshape(weight.sizes())
                      .to(weight.scalar_type())
                      .contiguous(weight.suggest_memory_format());
  }
  return {grad_input, grad_weight};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> full_conv_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask) {
  const auto s = check_and_make_shape(input, weight, std::nullopt, stride, dilation, groups,
                                      "full_conv_backward");
  const bool batched = input.dim() == weight.dim();
  check_grad_output(grad_output, input, s, batched);
  // Outputs not requested are distinct empty tensors (outputs of an op must not alias).
  at::Tensor grad_input = at::empty({0}, input.options());
  at::Tensor grad_weight = at::empty({0}, input.options());
  at::Tensor grad_bias = at::empty({0}, input.options());
  if (output_mask[2])
    grad_bias = grad_bias_from(batched ? grad_output : grad_output.unsqueeze(0), input.scalar_type());
  if (!output_mask[0] && !output_mask[1]) return {grad_input, grad_weight, grad_bias};

  const bool nonempty = grad_output.numel() > 0 && input.numel() > 0;
  // One tap: an ordinary convolution (no padding). Its grad_weight, a reduction over every
  // position, runs faster on ATen's (oneDNN's) convolution_backward than on the GEMM path,
  // except at stride 1 on large maps, where the GEMM path reads the input in place (no column
  // copy) in long GEMMs; its grad_input stays on the tiles (benchmarks/NOTES.md, entry 38).
  // bfloat16 (where the forward is ATen's): both gradients ATen's (1.1-3.7x; entry 40).
  if (nonempty && s.kernel_volume() == 1 && cpu_algorithm_setting() == "auto" &&
      input.scalar_type() == at::kBFloat16 && one_tap_on_aten(at::kBFloat16)) {
    auto grads = one_tap_backward(grad_output, input, weight, s, stride, dilation, groups,
                                  {output_mask[0], output_mask[1], false});
    return {output_mask[0] ? std::get<0>(grads) : grad_input, output_mask[1] ? std::get<1>(grads) : grad_weight,
            grad_bias};
  }
  if (output_mask[1] && nonempty && s.kernel_volume() == 1 && cpu_algorithm_setting() == "auto" &&
      (input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble) &&
      !(s.unit_stride() && s.out_spatial() >= kOneTapGemmGradWeightPositions)) {
    grad_weight = std::get<1>(one_tap_backward(grad_output, input, weight, s, stride, dilation, groups,
                                               {false, true, false}));
    output_mask[1] = false;
    if (!output_mask[0]) return {grad_input, grad_weight, grad_bias};
  }
  const auto w = weight.to(compute_dtype(weight.scalar_type())).contiguous();
  const auto dtype = compute_dtype(input.scalar_type());
  // per pass; an empty problem takes the unblocked path (which writes the zeros)
  auto pick = [&](Pass pass) {
    const Algorithm a = choose_algorithm(s, dtype, pass);
    return a == Algorithm::kBlocked && !nonempty ? choose_unblocked(s) : a;
  };
  const Algorithm gx_algo = pick(Pass::kGradInput), gw_algo = pick(Pass::kGradWeight);
  const bool gx_blocked = output_mask[0] && gx_algo == Algorithm::kBlocked;
  const bool gw_blocked = output_mask[1] && gw_algo == Algorithm::kBlocked;
  const bool gx_unblocked = output_mask[0] && !gx_blocked, gw_unblocked = output_mask[1] && !gw_blocked;
  // grad_output without a dense layout (e.g. expanded, from a sum) made dense once when both
  // gradients read it and one of them on the unblocked path (which needs it dense), not once
  // per pass; the blocked passes make their own layouts (freed between the passes)
  const bool densify = output_mask[0] && output_mask[1] && (gx_unblocked || gw_unblocked) &&
                       !grad_output.is_non_overlapping_and_dense();
  const at::Tensor grad_output_dense = densify ? grad_output.contiguous() : grad_output;
  if (gx_unblocked || gw_unblocked) {
    const auto gy = prepare(grad_output_dense, batched);
    if (gx_unblocked && gw_unblocked && gx_algo == gw_algo) {  // one pass computes both
      std::tie(grad_input, grad_weight) = unblocked_backward(s, gx_algo, gy, input, weight, w, batched, true, true);
    } else {
      if (gx_unblocked) grad_input = unblocked_backward(s, gx_algo, gy, input, weight, w, batched, true, false).first;
      if (gw_unblocked) grad_weight = unblocked_backward(s, gw_algo, gy, input, weight, w, batched, false, true).second;
    }
  }
  if (gw_blocked) {
    AT_DISPATCH_FLOATING_TYPES(dtype, "full_conv_grad_weight_cpu_blocked", [&] {
      grad_weight = blocked_grad_weight<scalar_t>(blocked_isa(), s, batched_5d(grad_output_dense, batched, s.ndim),
                                                  batched_5d(input, batched, s.ndim), weight.sizes(),
                                                  weight.suggest_memory_format());
    });
    grad_weight = grad_weight.to(weight.scalar_type()).contiguous(weight.suggest_memory_format());
  }
  if (gx_blocked) {
    // every grad_output element meets every tap of every input channel of its group; the
    // problems (stride 1, or residue classes of stride 1) have Cin_g output channels
    const bool bf16 = grad_output.scalar_type() == at::kBFloat16 &&
                      bf16_tiles(blocked_isa(), s.out_channels_per_group(), s.in_channels_per_group(), 1);
    const auto gy5 = bf16 ? bf16_operand(grad_output_dense, batched, s.ndim)
                          : blocked_input(batched_5d(grad_output_dense, batched, s.ndim),
                                          row_vector_kernel(s.out_channels_per_group(), s.in_channels_per_group(), 1) &&
                                              !depthwise_channels_last_input(as_batched_5d(grad_output_dense, batched, s.ndim),
                                                                             s.out_channels_per_group(),
                                                                             s.in_channels_per_group()),
                                          s.out_channels_per_group(), s.groups, max_dilation(s),
                                          double(s.in_channels_per_group()) * s.kernel_volume(), s.ndim);
    // written in place in the input's layout: no layout copy of grad_input
    auto gx = at::empty(batched ? input.sizes() : input.unsqueeze(0).sizes(),
                        gy5.options().dtype(dtype).memory_format(batched ? input.suggest_memory_format()
                                                                         : at::MemoryFormat::Contiguous));
    auto gx5 = as_5d(gx, s.ndim);
    AT_DISPATCH_FLOATING_TYPES(dtype, "full_conv_grad_input_cpu_blocked", [&] {
      if (s.unit_stride()) {
        // input and output channels swapped, the taps flipped
        const auto isa = blocked_isa();
        auto p = grad_input_problem(s);
        set_output_strides(p, gx5);
        blocked_forward<scalar_t>(isa, p, gy5, weight_6d(s, w).transpose(1, 2), true, nullptr, false,
                                  gx5.mutable_data_ptr<scalar_t>());
      } else {
        blocked_grad_input_strided<scalar_t>(blocked_isa(), s, gy5, w, gx5);
      }
    });
    grad_input = finish_grad_input(gx, input, batched);
  }
  if (output_mask[1]) apply_nonfinite_grad_output_padding(grad_weight, grad_output, s);
  return {grad_input, grad_weight, grad_bias};
}

}  // namespace
}  // namespace fullconv

TORCH_LIBRARY_IMPL(fullconv, CPU, m) {
  m.impl("full_conv", &fullconv::full_conv_cpu);
  m.impl("full_conv_backward", &fullconv::full_conv_backward_cpu);
  m.impl("full_conv_residual", &fullconv::full_conv_residual_cpu);
  m.impl("padded_add", &fullconv::padded_add_cpu);
}
