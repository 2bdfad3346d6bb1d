// CUDA kernels of full convolution: direct formulations that skip zero taps through the shared
// index math of conv_shape.h (tap_range for the gather view, tap_residue / tap_output_start for
// the scatter view, tap_output_range for grad_weight): register-blocked forward, grad_input and
// (few input channels) grad_weight, and one thread per element (per weight element for
// grad_weight) where a problem exceeds the blocked kernels' shared-memory tables. Only the
// blocked forward and grad_weight evaluate products with padding, and only inside a tile at a
// row's edges (0 * w or gy * 0: a subset of the padded reference's products). Torch-free, so
// nvcc compiles this file in seconds. 64-bit index arithmetic for every tensor offset; 32-bit
// only for quantities the host bounds (positions along the last dim in the forward, table and
// tile indices).
#include "device_math.cuh"
#include "full_conv_cuda.h"
#include "launch.cuh"

#include <cstdint>
#include <numeric>
#include <type_traits>

namespace fullconv {
namespace cuda {
namespace {

constexpr int kThreads = 256;

inline unsigned int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  // grid-stride loops cover the rest
  return static_cast<unsigned int>(b < 65535 * 8 ? (b > 0 ? b : 1) : 65535 * 8);
}

// One thread per output element; gathers the taps that meet real input.
template <typename T>
__global__ void forward_kernel(const T* __restrict__ x, const T* __restrict__ w,
                               const T* __restrict__ bias,
                               const unsigned char* __restrict__ nonfinite_weight,
                               Epilogue ep, T* __restrict__ y, ConvShape s) {
  using A = typename Acc<T>::type;
  const int64_t out_sp = s.out_spatial(), in_sp = s.in_spatial();
  const int64_t total = s.batch * s.out_channels * out_sp;
  const int64_t cin_g = s.in_channels_per_group(), cout_g = s.out_channels_per_group();
  const int64_t ktot = s.kernel_volume();
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    // idx = ((n * out_channels + co) * out0 + o0) * out1 + o1) * out2 + o2 (no 64-bit division
    // routine where the indices fit 32 bits: divmod_nonneg)
    int64_t o0, o1, o2, n, co, rest, rest2, nc;
    divmod_nonneg(idx, s.out_size[2], &rest, &o2);
    divmod_nonneg(rest, s.out_size[1], &rest2, &o1);
    divmod_nonneg(rest2, s.out_size[0], &nc, &o0);
    divmod_nonneg(nc, s.out_channels, &n, &co);
    const int64_t g = div_nonneg(co, cout_g);
    int64_t lo[3], hi[3];
    const int64_t o[3] = {o0, o1, o2};
    for (int i = 0; i < 3; ++i)
      tap_range(o[i], s.in_size[i], s.kernel[i], s.stride[i], s.dilation[i], &lo[i], &hi[i]);
    A acc = bias ? load(bias + co) : A(0);
    for (int64_t ci = 0; ci < cin_g; ++ci) {
      const T* xc = x + (n * s.in_channels + g * cin_g + ci) * in_sp;
      const T* wc = w + (co * cin_g + ci) * ktot;
      for (int64_t k0 = lo[0]; k0 <= hi[0]; ++k0) {
        const int64_t i0 = o0 * s.stride[0] + k0 * s.dilation[0] - s.padding(0);
        for (int64_t k1 = lo[1]; k1 <= hi[1]; ++k1) {
          const int64_t i1 = o1 * s.stride[1] + k1 * s.dilation[1] - s.padding(1);
          const T* xrow = xc + (i0 * s.in_size[1] + i1) * s.in_size[2];
          const T* wrow = wc + (k0 * s.kernel[1] + k1) * s.kernel[2];
          for (int64_t k2 = lo[2]; k2 <= hi[2]; ++k2) {
            const int64_t i2 = o2 * s.stride[2] + k2 * s.dilation[2] - s.padding(2);
            acc += load(wrow + k2) * load(xrow + i2);
          }
        }
      }
    }
    if (nonfinite_weight != nullptr && nonfinite_weight[co]) acc += padding_products(w, s, co, o);
    if (ep.residual != nullptr) acc += residual_value<T>(ep, nc, o);
    if (ep.relu) acc = relu_keep_nan(acc);
    y[idx] = store_as<T>(acc);
  }
}

// Forward, register-blocked (the default direct forward: few output channels per group, few
// input channels per group where the tiles' flat reduction is slow, and whatever the tiles do
// not take; forward_kernel above stays for kernels whose weights for one input channel do not
// fit kForwardWeightBytes, or rows too long for 32-bit positions). A block is one (sample,
// group, block of wc*CO output channels) and 8 warps: wc warps over CO-channel slices times
// 8/wc warps over position tasks. A task is one output row (o0, o1) and a segment of 32*P
// positions o2, lane l owning o2 = segment start + l + 32p. The block's weights for a chunk of
// input channels sit in shared memory ([ci][tap][channel]); a warp runs the taps that reach
// real input for its row (dims 0 and 1) and, along dim 2, the union of its positions' taps,
// each lane's loads predicated on its position meeting real input. The inner step per (input
// channel, tap) is P loads of x, CO weights read together and P*CO multiply-adds. Products with
// padding that a warp does evaluate are 0 * w (w finite: 0; w inf/nan: nan, as the padded
// reference); those it skips are added back for flagged channels (padding_products).
constexpr int kForwardWeightBytes = 32768;

struct ForwardGrid {
  int64_t segments, tasks, task_blocks, channel_blocks, total_blocks, ci_chunk;
  int wc, wt;  // warps over channel slices, warps over position tasks (wc * wt = 8)
};

template <typename T, int CO, int P>
__global__ void __launch_bounds__(256)
    forward_blocked_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                           const unsigned char* __restrict__ nonfinite_weight, Epilogue ep, T* __restrict__ y,
                           ConvShape s, ForwardGrid grid) {
  using A = typename Acc<T>::type;
  constexpr int kWeights = kForwardWeightBytes / int(sizeof(A));
  static_assert(256 * P * CO <= kWeights, "the epilogue's sums must fit the weights' space");
  FULLCONV_SHARED(A, wsh, kWeights, 16);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int cw = warp % grid.wc, tw = warp / grid.wc;
  const int wco = grid.wc * CO;  // output channels per block
  const int64_t cin_g = s.in_channels_per_group(), cout_g = s.out_channels_per_group();
  const int64_t ktot = s.kernel_volume(), in_sp = s.in_spatial(), out_sp = s.out_spatial();
  const int K2 = static_cast<int>(s.kernel[2]);
  const int d2 = static_cast<int>(s.dilation[2]);
  const int64_t pad0 = s.padding(0), pad1 = s.padding(1), pad2 = s.padding(2);
  for (int64_t blk = blockIdx.x; blk < grid.total_blocks; blk += gridDim.x) {
    int64_t tb, sb, g, n, rest;
    divmod_nonneg(blk, grid.task_blocks, &rest, &tb);
    divmod_nonneg(rest, grid.channel_blocks, &rest, &sb);
    divmod_nonneg(rest, s.groups, &n, &g);
    const int64_t co_base = sb * wco;          // the block's first channel within the group
    const int64_t my_co = co_base + cw * CO;   // this warp's first channel within the group
    const int64_t task = tb * grid.wt + tw;
    int64_t o0, o1, seg;
    divmod_nonneg(task, grid.segments, &rest, &seg);
    divmod_nonneg(rest, s.out_size[1], &o0, &o1);
    const bool active = task < grid.tasks && my_co < cout_g;
    const int64_t o2_first = seg * (32 * P) + lane;
    bool pos_ok[P];
#pragma unroll
    for (int p = 0; p < P; ++p) pos_ok[p] = active && o2_first + 32 * p < s.out_size[2];
    // the row's taps along dims 0 and 1; along dim 2 the union over the warp's positions
    int64_t lo0 = 0, hi0 = -1, lo1 = 0, hi1 = -1, lo2 = 0, hi2 = -1, unused;
    if (active) {
      tap_range(o0, s.in_size[0], s.kernel[0], s.stride[0], s.dilation[0], &lo0, &hi0);
      tap_range(o1, s.in_size[1], s.kernel[1], s.stride[1], s.dilation[1], &lo1, &hi1);
      const int64_t oa = seg * (32 * P);
      const int64_t ob = oa + 32 * P - 1 < s.out_size[2] - 1 ? oa + 32 * P - 1 : s.out_size[2] - 1;
      tap_range(oa, s.in_size[2], s.kernel[2], s.stride[2], s.dilation[2], &unused, &hi2);
      tap_range(ob, s.in_size[2], s.kernel[2], s.stride[2], s.dilation[2], &lo2, &unused);
    }
    // (32-bit positions along dim 2: the host checked they fit)
    int i2_first[P];
#pragma unroll
    for (int p = 0; p < P; ++p)
      i2_first[p] = static_cast<int>((o2_first + 32 * p) * s.stride[2] + lo2 * d2 - pad2);
    const unsigned in2 = static_cast<unsigned>(s.in_size[2]);
    const int n2 = static_cast<int>(hi2 - lo2 + 1);  // taps along dim 2 (<= 0: none)
    A acc[P][CO];
#pragma unroll
    for (int p = 0; p < P; ++p)
#pragma unroll
      for (int c = 0; c < CO; ++c) acc[p][c] = A(0);
    for (int64_t ci0 = 0; ci0 < cin_g; ci0 += grid.ci_chunk) {
      const int cc = static_cast<int>(cin_g - ci0 < grid.ci_chunk ? cin_g - ci0 : grid.ci_chunk);
      __syncthreads();  // the previous chunk's weights read
      const int per_ci = static_cast<int>(ktot) * wco;
      for (int e = tid; e < cc * per_ci; e += blockDim.x) {
        const int co_l = e % wco, rest_e = e / wco;
        const int tap = rest_e % static_cast<int>(ktot), ci_l = rest_e / static_cast<int>(ktot);
        wsh[e] = co_base + co_l < cout_g
                     ? load(w + ((g * cout_g + co_base + co_l) * cin_g + ci0 + ci_l) * ktot + tap)
                     : A(0);
      }
      __syncthreads();
      for (int ci_l = 0; ci_l < (active ? cc : 0); ++ci_l) {
        const T* xc = x + (n * s.in_channels + g * cin_g + ci0 + ci_l) * in_sp;
        for (int64_t k0 = lo0; k0 <= hi0; ++k0) {
          const int64_t i0 = o0 * s.stride[0] + k0 * s.dilation[0] - pad0;
          for (int64_t k1 = lo1; k1 <= hi1; ++k1) {
            const int64_t i1 = o1 * s.stride[1] + k1 * s.dilation[1] - pad1;
            const T* xrow = xc + (i0 * s.in_size[1] + i1) * s.in_size[2];
            const A* wp = wsh + ((ci_l * ktot + (k0 * s.kernel[1] + k1) * K2 + lo2) * wco + cw * CO);
            const T* xp[P];
            int i2[P];
#pragma unroll
            for (int p = 0; p < P; ++p) {
              i2[p] = i2_first[p];
              xp[p] = xrow + i2[p];
            }
            for (int t = 0; t < n2; ++t) {
              A xv[P];
#pragma unroll
              for (int p = 0; p < P; ++p) xv[p] = pos_ok[p] && static_cast<unsigned>(i2[p]) < in2 ? load(xp[p]) : A(0);
              A wv[CO];
#pragma unroll
              for (int c = 0; c < CO; ++c) wv[c] = wp[c];
#pragma unroll
              for (int p = 0; p < P; ++p) {
#pragma unroll
                for (int c = 0; c < CO; ++c) acc[p][c] += xv[p] * wv[c];
                i2[p] += d2;
                xp[p] += d2;
              }
              wp += wco;
            }
          }
        }
      }
    }
    // Epilogue. Outputs of a flagged channel or with a residual go through shared memory (the
    // weights' space, free once every warp is past its loop), so their rarer code reads the
    // sums with run-time indices and the loop above keeps its registers.
    __syncthreads();
    if (active) {
      bool fixups = ep.residual != nullptr;
#pragma unroll
      for (int c = 0; c < CO; ++c)
        fixups = fixups || (nonfinite_weight != nullptr && my_co + c < cout_g && nonfinite_weight[g * cout_g + my_co + c]);
      const int64_t y_row = (o0 * s.out_size[1] + o1) * s.out_size[2] + o2_first;
      if (!fixups) {
#pragma unroll
        for (int c = 0; c < CO; ++c) {
          if (my_co + c >= cout_g) break;
          const int64_t oc = g * cout_g + my_co + c;
          const A b = bias ? load(bias + oc) : A(0);
          T* yc = y + (n * s.out_channels + oc) * out_sp + y_row;
#pragma unroll
          for (int p = 0; p < P; ++p) {
            A v = acc[p][c] + b;
            if (ep.relu) v = relu_keep_nan(v);
            if (pos_ok[p]) yc[32 * p] = store_as<T>(v);
          }
        }
      } else {
        A* sums = wsh + tid * (P * CO);
#pragma unroll
        for (int p = 0; p < P; ++p)
#pragma unroll
          for (int c = 0; c < CO; ++c) sums[p * CO + c] = acc[p][c];
        for (int c = 0; c < CO && my_co + c < cout_g; ++c) {
          const int64_t oc = g * cout_g + my_co + c;
          const bool flagged = nonfinite_weight != nullptr && nonfinite_weight[oc];
          const A b = bias ? load(bias + oc) : A(0);
          for (int p = 0; p < P; ++p) {
            if (o2_first + 32 * p >= s.out_size[2]) break;
            const int64_t o[3] = {o0, o1, o2_first + 32 * p};
            A v = sums[p * CO + c] + b;
            if (flagged) v += padding_products(w, s, oc, o);
            if (ep.residual != nullptr) v += residual_value<T>(ep, n * s.out_channels + oc, o);
            if (ep.relu) v = relu_keep_nan(v);
            y[(n * s.out_channels + oc) * out_sp + y_row + 32 * p] = store_as<T>(v);
          }
        }
      }
    }
  }
}

// grad_weight, register-blocked, for layers of few input channels per group (RGB stems), where
// the tiles ran flat (input channel, tap) columns: a GEMM of (output channels) x (input channel,
// tap) columns over the reduction (sample, output position). A block is one (group, block of 64
// output channels, pass of 160 columns, slice of the reduction) and steps through the slice's
// position tiles (an output row (n, o0, o1) and 32 positions along dim 2): each step stages the
// tile's grad_output (64 channels x 32 positions; 4-channel groups XOR-swizzled by position,
// so both the transposing stores and the 16-byte reads stay nearly free of bank conflicts) and
// the input rows its taps read (zeros where they meet padding) in shared memory; warp w owns 8
// output channels, lane l the columns l + 32t (t < 5), so a position costs two 16-byte reads
// of grad_output, five reads of x and 40 multiply-adds per thread. Slices write partial sums;
// a second kernel adds them in slice order (deterministic, no atomics). Products with padding
// inside a tile are gy*0 (a subset of the padded reference's products, so a non-finite
// gradient gives nan wherever the reference does); positions past a row's end are not visited.
constexpr int kWeightRows = 32;     // positions per step
constexpr int kWeightChannels = 64; // output channels per block (8 warps x 8)
constexpr int kWeightColsPerLane = 5;
constexpr int kWeightCols = 32 * kWeightColsPerLane;
constexpr int kWeightXTile = 3072;  // input elements staged per step
constexpr int kWeightXRows = kWeightXTile / kWeightRows;  // input rows staged per step, at most

struct WeightGrid {
  int64_t segments, tiles, co_blocks, passes, slices, tiles_per_slice, span2, total_blocks, cols;
};

template <typename T>
__global__ void __launch_bounds__(256)
    grad_weight_blocked_kernel(const T* __restrict__ gy, const T* __restrict__ x,
                               typename Acc<T>::type* __restrict__ partial, ConvShape s, WeightGrid grid) {
  using A = typename Acc<T>::type;
  constexpr int R = kWeightRows, CO = 8, CT = kWeightColsPerLane;
  FULLCONV_SHARED(A, gys, R * kWeightChannels, 16);
  FULLCONV_SHARED(A, xs, kWeightXTile, 16);
  FULLCONV_SHARED(int64_t, row_offset, kWeightXRows, 16);
  FULLCONV_SHARED(int32_t, row_tap, 2 * kWeightXRows, 16);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t cin_g = s.in_channels_per_group(), cout_g = s.out_channels_per_group();
  const int64_t ktot = s.kernel_volume(), in_sp = s.in_spatial(), out_sp = s.out_spatial();
  const int K01 = static_cast<int>(s.kernel[0] * s.kernel[1]);
  const int span2 = static_cast<int>(grid.span2);
  const int s2 = static_cast<int>(s.stride[2]);
  const int K1 = static_cast<int>(s.kernel[1]);
  const int x_rows = static_cast<int>(cin_g) * K01;  // x_rows * span2 <= kWeightXTile (host), span2 >= 32
  const int64_t pad0 = s.padding(0), pad1 = s.padding(1), pad2 = s.padding(2);
  // per staged input row (ci, k0, k1): its offset from the sample's (i0, i1) = (0, 0) and its tap
  // offsets k0 * d0, k1 * d1 (the same for every tile)
  for (int row = tid; row < x_rows; row += blockDim.x) {
    const int k01 = row % K01, ci = row / K01;
    const int64_t k0d = (k01 / K1) * s.dilation[0], k1d = (k01 % K1) * s.dilation[1];
    row_tap[2 * row] = static_cast<int32_t>(k0d);
    row_tap[2 * row + 1] = static_cast<int32_t>(k1d);
    row_offset[row] = ci * in_sp + (k0d * s.in_size[1] + k1d) * s.in_size[2];
  }
  __syncthreads();
  for (int64_t blk = blockIdx.x; blk < grid.total_blocks; blk += gridDim.x) {
    int64_t slice, pass, cb, g, rest;
    divmod_nonneg(blk, grid.slices, &rest, &slice);
    divmod_nonneg(rest, grid.passes, &rest, &pass);
    divmod_nonneg(rest, grid.co_blocks, &g, &cb);
    const int64_t co_base = cb * kWeightChannels;
    const int64_t my_co = co_base + warp * CO;
    // this lane's columns (input channel, tap) and where their inputs sit in the x tile
    int xoff[CT];
    bool col_ok[CT];
#pragma unroll
    for (int t = 0; t < CT; ++t) {
      const int64_t col = pass * kWeightCols + lane + 32 * t;
      col_ok[t] = col < grid.cols;
      int64_t ci = 0, tap = 0, k[kMaxSpatialDims] = {0, 0, 0};
      if (col_ok[t]) {
        divmod_nonneg(col, ktot, &ci, &tap);
        tap_coords(tap, s.kernel, k);
      }
      xoff[t] = static_cast<int>(((ci * s.kernel[0] + k[0]) * s.kernel[1] + k[1]) * span2 + k[2] * s.dilation[2]);
    }
    A acc[CO][CT];
#pragma unroll
    for (int c = 0; c < CO; ++c)
#pragma unroll
      for (int t = 0; t < CT; ++t) acc[c][t] = A(0);
    const int64_t t_begin = slice * grid.tiles_per_slice;
    const int64_t t_end = t_begin + grid.tiles_per_slice < grid.tiles ? t_begin + grid.tiles_per_slice : grid.tiles;
    for (int64_t tile = t_begin; tile < t_end; ++tile) {
      int64_t n, o0, o1, seg;
      divmod_nonneg(tile, grid.segments, &rest, &seg);
      divmod_nonneg(rest, s.out_size[1], &rest, &o1);
      divmod_nonneg(rest, s.out_size[0], &n, &o0);
      const int64_t o2_base = seg * R;
      const int rcount = static_cast<int>(s.out_size[2] - o2_base < R ? s.out_size[2] - o2_base : R);
      __syncthreads();  // the previous step's reads are done
      const T* gy_row = gy + (n * s.out_channels + g * cout_g + co_base) * out_sp + (o0 * s.out_size[1] + o1) *
                                                                                     s.out_size[2] + o2_base;
      for (int e = tid; e < R * kWeightChannels; e += blockDim.x) {
        const int r = e % R, co = e / R;
        const A v = co_base + co < cout_g && r < rcount ? load(gy_row + co * out_sp + r) : A(0);
        gys[r * kWeightChannels + (((co >> 2) ^ (r & 15)) << 2) + (co & 3)] = v;
      }
      // the input rows (ci, k0, k1) its taps read, span2 elements each from i2_base: a warp per
      // row, from the rows' table (no division in the loop)
      const T* x_n = x + (n * s.in_channels + g * cin_g) * in_sp;
      const int64_t i0_base = o0 * s.stride[0] - pad0, i1_base = o1 * s.stride[1] - pad1;
      const int64_t i2_base = o2_base * s.stride[2] - pad2;
      const int64_t tile_offset = (i0_base * s.in_size[1] + i1_base) * s.in_size[2];
      for (int row = warp; row < x_rows; row += blockDim.x / 32) {
        const int64_t i0 = i0_base + row_tap[2 * row], i1 = i1_base + row_tap[2 * row + 1];
        const bool row_in = 0 <= i0 && i0 < s.in_size[0] && 0 <= i1 && i1 < s.in_size[1];
        const T* src = x_n + (row_in ? row_offset[row] + tile_offset : 0);
        A* dst = xs + row * span2;
        for (int c = lane; c < span2; c += 32) {
          const int64_t i2 = i2_base + c;
          dst[c] = row_in && 0 <= i2 && i2 < s.in_size[2] ? load(src + i2) : A(0);
        }
      }
      __syncthreads();
      if (my_co >= cout_g) continue;  // (no barrier before the next step's first)
      for (int r = 0; r < rcount; ++r) {
        A gv[CO];
        const A* gp = gys + r * kWeightChannels;
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int q = 0; q < 4; ++q) gv[4 * h + q] = gp[(((2 * warp + h) ^ (r & 15)) << 2) + q];
        A xv[CT];
#pragma unroll
        for (int t = 0; t < CT; ++t) xv[t] = xs[xoff[t] + r * s2];
#pragma unroll
        for (int c = 0; c < CO; ++c)
#pragma unroll
          for (int t = 0; t < CT; ++t) acc[c][t] += gv[c] * xv[t];
      }
    }
    // this slice's partial sums: partial[slice][output channel][column]
#pragma unroll
    for (int c = 0; c < CO; ++c)
#pragma unroll
      for (int t = 0; t < CT; ++t)
        if (my_co + c < cout_g && col_ok[t])
          partial[(slice * s.out_channels + g * cout_g + my_co + c) * grid.cols + pass * kWeightCols + lane + 32 * t] =
              acc[c][t];
  }
}

// gw[e] = the slices' partial sums of element e, added in slice order.
template <typename T>
__global__ void sum_slices_kernel(const typename Acc<T>::type* __restrict__ partial, T* __restrict__ gw,
                                  int64_t elements, int64_t slices) {
  using A = typename Acc<T>::type;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < elements; e += int64_t(gridDim.x) * blockDim.x) {
    A v = A(0);
    for (int64_t q = 0; q < slices; ++q) v += partial[q * elements + e];
    gw[e] = store_as<T>(v);
  }
}

template <typename T>
__global__ void padded_add_kernel(const T* __restrict__ x, Epilogue ep, T* __restrict__ out,
                                  int64_t planes, int64_t d0, int64_t d1, int64_t d2) {
  using A = typename Acc<T>::type;
  const int64_t total = planes * d0 * d1 * d2;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    int64_t o0, o1, o2, plane, rest, rest2;
    divmod_nonneg(idx, d2, &rest, &o2);
    divmod_nonneg(rest, d1, &rest2, &o1);
    divmod_nonneg(rest2, d0, &plane, &o0);
    A v = load(x + idx);
    const int64_t o[3] = {o0, o1, o2};
    if (ep.residual != nullptr) v += residual_value<T>(ep, plane, o);
    if (ep.relu) v = relu_keep_nan(v);
    out[idx] = store_as<T>(v);
  }
}

// grad_input: one thread per (sample, group, block of up to MaxCh input channels of the group,
// input position), the positions ordered by residue class (i = b*stride + r along each dim:
// b fastest, then the class r), each class over the largest class's extents E (threads past
// their class's end do nothing; the residues run over R = min(stride, size) per dim, so the
// threads number less than 2^dims times the positions). A warp's threads therefore share
// their class and so visit the same taps (those of the class: each reaches a valid output, conv_shape.h; no product with
// padding, no discarded strided output), read consecutive grad_output positions
// (q = start + b), and load each grad_output value once for the block's channels.
template <typename T, int MaxCh>
__global__ void grad_input_kernel(const T* __restrict__ gy, const T* __restrict__ w, T* __restrict__ gx,
                                  ConvShape s, int64_t E0, int64_t E1, int64_t E2, int64_t R1, int64_t R2,
                                  int64_t classes, int64_t cblocks) {
  using A = typename Acc<T>::type;
  const int64_t out_sp = s.out_spatial(), in_sp = s.in_spatial();
  const int64_t cin_g = s.in_channels_per_group(), cout_g = s.out_channels_per_group();
  const int64_t ktot = s.kernel_volume();
  const int64_t total = s.batch * s.groups * cblocks * classes * E0 * E1 * E2;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    // idx = (((((n * groups + g) * cblocks + cb) * classes + cls) * E0 + b0) * E1 + b1) * E2 + b2,
    // cls = (r0 * R1 + r1) * R2 + r2
    int64_t b0, b1, b2, r0, r1, r2, cls, cb, g, n, rest;
    divmod_nonneg(idx, E2, &rest, &b2);
    divmod_nonneg(rest, E1, &rest, &b1);
    divmod_nonneg(rest, E0, &rest, &b0);
    divmod_nonneg(rest, classes, &rest, &cls);
    divmod_nonneg(rest, cblocks, &rest, &cb);
    divmod_nonneg(rest, s.groups, &n, &g);
    divmod_nonneg(cls, R2, &rest, &r2);
    divmod_nonneg(rest, R1, &r0, &r1);
    const int64_t i0 = b0 * s.stride[0] + r0, i1 = b1 * s.stride[1] + r1, i2 = b2 * s.stride[2] + r2;
    if (i0 >= s.in_size[0] || i1 >= s.in_size[1] || i2 >= s.in_size[2]) continue;  // past the class's end
    const int64_t c_first = cb * MaxCh;
    const int64_t chans = cin_g - c_first < MaxCh ? cin_g - c_first : MaxCh;
    A acc[MaxCh];
#pragma unroll
    for (int c = 0; c < MaxCh; ++c) acc[c] = A(0);
    for (int64_t k0 = 0; k0 < s.kernel[0]; ++k0) {
      if (tap_residue(k0, s.kernel[0], s.stride[0], s.dilation[0]) != r0) continue;
      const int64_t q0 = tap_output_start(r0, k0, s.kernel[0], s.stride[0], s.dilation[0]) + b0;
      for (int64_t k1 = 0; k1 < s.kernel[1]; ++k1) {
        if (tap_residue(k1, s.kernel[1], s.stride[1], s.dilation[1]) != r1) continue;
        const int64_t q1 = tap_output_start(r1, k1, s.kernel[1], s.stride[1], s.dilation[1]) + b1;
        for (int64_t k2 = 0; k2 < s.kernel[2]; ++k2) {
          if (tap_residue(k2, s.kernel[2], s.stride[2], s.dilation[2]) != r2) continue;
          const int64_t q2 = tap_output_start(r2, k2, s.kernel[2], s.stride[2], s.dilation[2]) + b2;
          const int64_t out_off = (q0 * s.out_size[1] + q1) * s.out_size[2] + q2;
          const int64_t tap = (k0 * s.kernel[1] + k1) * s.kernel[2] + k2;
          for (int64_t co = g * cout_g; co < (g + 1) * cout_g; ++co) {
            const A gv = load(gy + (n * s.out_channels + co) * out_sp + out_off);
            const T* wc = w + (co * cin_g + c_first) * ktot + tap;
#pragma unroll
            for (int c = 0; c < MaxCh; ++c)
              if (c < chans) acc[c] += load(wc + c * ktot) * gv;
          }
        }
      }
    }
    T* out = gx + (n * s.in_channels + g * cin_g + c_first) * in_sp + (i0 * s.in_size[1] + i1) * s.in_size[2] + i2;
#pragma unroll
    for (int c = 0; c < MaxCh; ++c)
      if (c < chans) out[c * in_sp] = store_as<T>(acc[c]);
  }
}

// grad_input, register-blocked (the default direct grad_input; grad_input_kernel above stays
// for kernels whose residue classes hold more taps than the tables below, kBlockedMaxTaps).
// gx[n, ci, i] = sum over co and the taps of i's residue class of gy[n, co, q(i, tap)] *
// w[co, ci, tap]: every product reaches a real input, none meets padding or a discarded strided
// output. A block is one (sample, group, block of C input channels, residue class) and
// kBlockedWarps warp tasks; a warp task is one row (b0, b1) of the class and a segment of
// 32*P positions b2 along the last dim, lane l owning b2 = segment start + l + 32p (p < P), so
// each of the P loads of a warp reads 32 consecutive grad_output elements. The class's taps
// (their output offsets) and the weights of a chunk of output channels for those taps and the
// C channels sit in shared memory, so the inner step per (output channel, tap) is P loads of
// grad_output, C weights read together, and P*C multiply-adds into registers (the one-thread-
// per-element kernel did C multiply-adds per load of grad_output and C weight loads).
// Deterministic: each gx element is summed by one thread in a fixed order.
constexpr int kBlockedWarps = 8;
constexpr int kBlockedMaxTaps = 256;
constexpr int kBlockedWeightBytes = 16384;

struct BlockedGrid {
  int64_t extent[kMaxSpatialDims];   // class 0's extent per dim (the largest)
  int64_t residues[kMaxSpatialDims]; // R = min(stride, size) per dim
  int64_t step[kMaxSpatialDims];     // distance between consecutive taps of one class: s / gcd(s, d)
  int64_t classes, cblocks, segments, tasks, blocks_per_class, total_blocks;
};

// The blocked kernel's inner loops over a chunk of output channels and the class's taps:
// acc[p][c] += gy(position p, channel co, tap j) * w(co, c, tap j). Channel by channel, so a
// warp's loads for one channel's taps (shifted windows of a few neighbouring rows of one plane,
// shared with the block's other warps) meet in L1; taps outermost (the order before) streamed
// the whole chunk's planes through L1 once per tap (NOTES.md 30). kAll: every position valid.
template <typename T, int C, int P, bool kAll>
__device__ __forceinline__ void blocked_taps(const T* __restrict__ plane, const int64_t* tap_offset,
                                             const typename Acc<T>::type* wsh, int ntaps, int ch, int64_t out_sp,
                                             const bool (&valid)[P], typename Acc<T>::type (&acc)[P][C]) {
  using A = typename Acc<T>::type;
  constexpr int CS = C == 3 ? 4 : C;
  const A* wp = wsh;
  for (int co = 0; co < ch; ++co, plane += out_sp) {
#pragma unroll 2
    for (int j = 0; j < ntaps; ++j, wp += CS) {
      const T* gp = plane + tap_offset[j];
      A gv[P];
#pragma unroll
      for (int p = 0; p < P; ++p) gv[p] = (kAll || valid[p]) ? load(gp + 32 * p) : A(0);
      A wv[CS];
#pragma unroll
      for (int c = 0; c < CS; ++c) wv[c] = wp[c];
#pragma unroll
      for (int p = 0; p < P; ++p)
#pragma unroll
        for (int c = 0; c < C; ++c) acc[p][c] += gv[p] * wv[c];
    }
  }
}

template <typename T, int C, int P>
__global__ void __launch_bounds__(kBlockedWarps * 32)
    grad_input_blocked_kernel(const T* __restrict__ gy, const T* __restrict__ w, T* __restrict__ gx, ConvShape s,
                              BlockedGrid grid) {
  using A = typename Acc<T>::type;
  constexpr int CS = C == 3 ? 4 : C;  // weights per (tap, output channel) in shared memory
  constexpr int kWeights = kBlockedWeightBytes / int(sizeof(A));
  FULLCONV_SHARED(int64_t, tap_offset, kBlockedMaxTaps, 16);
  FULLCONV_SHARED(int32_t, tap_index, kBlockedMaxTaps, 16);
  FULLCONV_SHARED(A, wsh, kWeights, 16);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t out_sp = s.out_spatial(), in_sp = s.in_spatial();
  const int64_t cin_g = s.in_channels_per_group(), cout_g = s.out_channels_per_group();
  const int64_t ktot = s.kernel_volume();
  for (int64_t blk = blockIdx.x; blk < grid.total_blocks; blk += gridDim.x) {
    int64_t bt, cls, cb, g, n, rest, r[kMaxSpatialDims];
    divmod_nonneg(blk, grid.blocks_per_class, &rest, &bt);
    divmod_nonneg(rest, grid.classes, &rest, &cls);
    divmod_nonneg(rest, grid.cblocks, &rest, &cb);
    divmod_nonneg(rest, s.groups, &n, &g);
    divmod_nonneg(cls, grid.residues[2], &rest, &r[2]);
    divmod_nonneg(rest, grid.residues[1], &r[0], &r[1]);
    // the class's taps per dim: first, first + step, ... (count of them)
    int64_t first[kMaxSpatialDims], count[kMaxSpatialDims];
    for (int i = 0; i < kMaxSpatialDims; ++i) {
      first[i] = -1;
      const int64_t scan = grid.step[i] < s.kernel[i] ? grid.step[i] : s.kernel[i];
      for (int64_t k = 0; k < scan; ++k)
        if (tap_residue(k, s.kernel[i], s.stride[i], s.dilation[i]) == r[i]) {
          first[i] = k;
          break;
        }
      count[i] = first[i] < 0 ? 0 : div_nonneg(s.kernel[i] - first[i] + grid.step[i] - 1, grid.step[i]);
    }
    const int ntaps = static_cast<int>(count[0] * count[1] * count[2]);  // <= kBlockedMaxTaps (host)
    const int per_channel = ntaps * CS;
    // output channels per chunk of weights (>= 1: the host checked one fits; all without taps)
    const int64_t chunk_max = per_channel == 0 ? cout_g : kWeights / per_channel;
    const int64_t chunk = cout_g < chunk_max ? cout_g : chunk_max;
    __syncthreads();  // the previous block's readers of the tables are done
    for (int j = tid; j < ntaps; j += blockDim.x) {
      const int64_t j2 = j % count[2], j1 = (j / count[2]) % count[1], j0 = j / (count[2] * count[1]);
      const int64_t k0 = first[0] + j0 * grid.step[0], k1 = first[1] + j1 * grid.step[1],
                    k2 = first[2] + j2 * grid.step[2];
      const int64_t q0 = tap_output_start(r[0], k0, s.kernel[0], s.stride[0], s.dilation[0]);
      const int64_t q1 = tap_output_start(r[1], k1, s.kernel[1], s.stride[1], s.dilation[1]);
      const int64_t q2 = tap_output_start(r[2], k2, s.kernel[2], s.stride[2], s.dilation[2]);
      tap_offset[j] = (q0 * s.out_size[1] + q1) * s.out_size[2] + q2;
      tap_index[j] = static_cast<int32_t>((k0 * s.kernel[1] + k1) * s.kernel[2] + k2);
    }
    // this warp's task and this lane's positions
    const int64_t task = bt * kBlockedWarps + warp;
    int64_t b0, b1, seg;
    divmod_nonneg(task, grid.segments, &rest, &seg);
    divmod_nonneg(rest, grid.extent[1], &b0, &b1);
    const int64_t i0 = b0 * s.stride[0] + r[0], i1 = b1 * s.stride[1] + r[1];
    const bool row_ok = task < grid.tasks && i0 < s.in_size[0] && i1 < s.in_size[1];
    const int64_t b2 = seg * (32 * P) + lane;
    bool valid[P];
    bool any = false;
#pragma unroll
    for (int p = 0; p < P; ++p) {
      valid[p] = row_ok && (b2 + 32 * p) * s.stride[2] + r[2] < s.in_size[2];
      any = any || valid[p];
    }
    const int64_t c_first = cb * C;
    const int chans = static_cast<int>(cin_g - c_first < C ? cin_g - c_first : C);
    A acc[P][C];
#pragma unroll
    for (int p = 0; p < P; ++p)
#pragma unroll
      for (int c = 0; c < C; ++c) acc[p][c] = A(0);
    const int64_t row_offset = (b0 * s.out_size[1] + b1) * s.out_size[2] + b2;
    for (int64_t co0 = 0; co0 < cout_g; co0 += chunk) {
      const int ch = static_cast<int>(cout_g - co0 < chunk ? cout_g - co0 : chunk);
      __syncthreads();  // tap tables written; the previous chunk's weights read
      // wsh[(co * ntaps + j) * CS + c] = w[g*cout_g + co0 + co, c_first + c, tap j] (0 past the channels)
      for (int e = tid; e < ntaps * ch * CS; e += blockDim.x) {
        const int c = e % CS, jc = e / CS, j = jc % ntaps, co = jc / ntaps;
        wsh[e] = c < chans ? load(w + ((g * cout_g + co0 + co) * cin_g + c_first + c) * ktot + tap_index[j]) : A(0);
      }
      __syncthreads();
      if (!any) continue;
      const T* plane = gy + (n * s.out_channels + g * cout_g + co0) * out_sp + row_offset;
      // (all P positions valid: plain loads at fixed offsets; else the row's tail, predicated)
      if (valid[P - 1])
        blocked_taps<T, C, P, true>(plane, tap_offset, wsh, ntaps, ch, out_sp, valid, acc);
      else
        blocked_taps<T, C, P, false>(plane, tap_offset, wsh, ntaps, ch, out_sp, valid, acc);
    }
    if (any) {
      T* out = gx + (n * s.in_channels + g * cin_g + c_first) * in_sp + (i0 * s.in_size[1] + i1) * s.in_size[2] +
               b2 * s.stride[2] + r[2];
#pragma unroll
      for (int p = 0; p < P; ++p)
#pragma unroll
        for (int c = 0; c < C; ++c)
          if (valid[p] && c < chans) out[c * in_sp + 32 * p * s.stride[2]] = store_as<T>(acc[p][c]);
    }
  }
}

// One block per weight element (co, ci, tap): the block reduces grad_out * input over the
// batch and the tap's output window in a fixed order (deterministic, no atomics).
template <typename T>
__global__ void grad_weight_kernel(const T* __restrict__ gy, const T* __restrict__ x,
                                   T* __restrict__ gw, ConvShape s) {
  using A = typename Acc<T>::type;
  FULLCONV_SHARED(A, partial, kThreads, 16);
  const int64_t cin_g = s.in_channels_per_group(), cout_g = s.out_channels_per_group();
  const int64_t ktot = s.kernel_volume();
  const int64_t out_sp = s.out_spatial(), in_sp = s.in_spatial();
  const int64_t total = s.out_channels * cin_g * ktot;
  for (int64_t widx = blockIdx.x; widx < total; widx += gridDim.x) {
    int64_t tap, ci, co, rest;
    divmod_nonneg(widx, ktot, &rest, &tap);
    divmod_nonneg(rest, cin_g, &co, &ci);
    const int64_t g = div_nonneg(co, cout_g);
    int64_t lo[3], hi[3], shift[3], k[3];
    tap_coords(tap, s.kernel, k);
    int64_t count = 1, extent[3];
    for (int i = 0; i < 3; ++i) {
      tap_output_range(k[i], s.in_size[i], s.kernel[i], s.stride[i], s.dilation[i], &lo[i], &hi[i]);
      shift[i] = k[i] * s.dilation[i] - s.padding(i);
      extent[i] = hi[i] >= lo[i] ? hi[i] - lo[i] + 1 : 0;
      count *= extent[i];
    }
    A acc = A(0);
    const int64_t work = s.batch * count;
    for (int64_t j = threadIdx.x; j < work; j += blockDim.x) {
      int64_t e0, e1, e2, n, rest, rest2;
      divmod_nonneg(j, extent[2], &rest, &e2);
      divmod_nonneg(rest, extent[1], &rest2, &e1);
      divmod_nonneg(rest2, extent[0], &n, &e0);
      const int64_t q0 = lo[0] + e0, q1 = lo[1] + e1, q2 = lo[2] + e2;
      const int64_t i0 = q0 * s.stride[0] + shift[0], i1 = q1 * s.stride[1] + shift[1],
                    i2 = q2 * s.stride[2] + shift[2];
      acc += load(gy + (n * s.out_channels + co) * out_sp + (q0 * s.out_size[1] + q1) * s.out_size[2] + q2) *
             load(x + (n * s.in_channels + g * cin_g + ci) * in_sp + (i0 * s.in_size[1] + i1) * s.in_size[2] + i2);
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
      if (static_cast<int>(threadIdx.x) < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
      __syncthreads();
    }
    if (threadIdx.x == 0) gw[widx] = store_as<T>(partial[0]);
    __syncthreads();
  }
}

// The register-blocked forward's grid, or false where one input channel's weights for a
// block's channels do not fit its shared memory or the positions along dim 2 exceed 32 bits.
template <typename T, int CO, int P>
bool forward_grid(const ConvShape& s, ForwardGrid* grid) {
  using A = typename Acc<T>::type;
  const int64_t cout_g = s.out_channels_per_group();
  const int64_t slices = (cout_g + CO - 1) / CO;
  grid->wc = slices >= 8 ? 8 : slices >= 4 ? 4 : slices >= 2 ? 2 : 1;
  // (fewer channel slices per block where one input channel's weights for them would not fit)
  while (grid->wc > 1 && s.kernel_volume() * grid->wc * CO * int64_t(sizeof(A)) > kForwardWeightBytes) grid->wc /= 2;
  grid->wt = 8 / grid->wc;
  const int64_t per_ci = s.kernel_volume() * grid->wc * CO * int64_t(sizeof(A));
  if (per_ci > kForwardWeightBytes) return false;
  const int64_t reach = (s.out_size[2] + 32 * P) * s.stride[2] + s.kernel[2] * s.dilation[2] + s.in_size[2];
  if (reach >= (int64_t(1) << 31)) return false;
  grid->ci_chunk = kForwardWeightBytes / per_ci;
  grid->segments = (s.out_size[2] + 32 * P - 1) / (32 * P);
  grid->tasks = s.out_size[0] * s.out_size[1] * grid->segments;
  grid->task_blocks = (grid->tasks + grid->wt - 1) / grid->wt;
  grid->channel_blocks = (cout_g + grid->wc * CO - 1) / (grid->wc * CO);
  grid->total_blocks = s.batch * s.groups * grid->channel_blocks * grid->task_blocks;
  return true;
}

template <typename T, int CO, int P>
cudaError_t launch_forward_blocked(const void* x, const void* w, const void* b, const unsigned char* nf, Epilogue ep,
                                   void* y, const ConvShape& s, cudaStream_t stream, bool* launched) {
  ForwardGrid grid;
  *launched = forward_grid<T, CO, P>(s, &grid);
  if (!*launched) return cudaSuccess;
  const int64_t cap = grid_cap();  // a block-stride loop covers the rest
  const unsigned int blocks = static_cast<unsigned int>(grid.total_blocks < cap ? grid.total_blocks : cap);
  FULLCONV_LAUNCH(blocks, 256, stream, forward_blocked_kernel<T, CO, P>)(
      static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b), nf, ep, static_cast<T*>(y), s,
      grid);
  return FULLCONV_LAUNCH_STATUS();
}

// The register-blocked forward's tile for a problem: f(CO, P) with CO output channels a warp
// slice (8, 4 for float64's staging, or the group's 1, 2 or up to 4) and P positions a lane
// (4, or 8 for one or two channels), as std::integral_constant values.
template <typename T, typename F>
auto with_forward_tile(const ConvShape& s, F&& f) {
  using I = std::integral_constant<int, 1>;
  using II = std::integral_constant<int, 2>;
  using IV = std::integral_constant<int, 4>;
  using VIII = std::integral_constant<int, 8>;
  using Wide = std::integral_constant<int, sizeof(typename Acc<T>::type) == 8 ? 4 : 8>;
  const int64_t cout_g = s.out_channels_per_group();
  if (cout_g == 1) return f(I(), VIII());
  if (cout_g == 2) return f(II(), VIII());
  if (cout_g <= 4) return f(IV(), IV());
  return f(Wide(), IV());
}

template <typename T>
cudaError_t launch_forward(const void* x, const void* w, const void* b, const unsigned char* nf,
                           Epilogue ep, void* y, const ConvShape& s, cudaStream_t stream, DirectKernels kernels) {
  const int64_t total = s.batch * s.out_channels * s.out_spatial();
  if (total == 0) return cudaSuccess;
  bool launched = false;
  if (kernels == DirectKernels::kBlocked) {
    const cudaError_t err = with_forward_tile<T>(s, [&](auto co, auto p) {
      return launch_forward_blocked<T, decltype(co)::value, decltype(p)::value>(x, w, b, nf, ep, y, s, stream,
                                                                                &launched);
    });
    if (launched || err != cudaSuccess) return err;
  }
  FULLCONV_LAUNCH(blocks_for(total), kThreads, stream, forward_kernel<T>)(
      static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b), nf, ep,
      static_cast<T*>(y), s);
  return FULLCONV_LAUNCH_STATUS();
}

template <typename T, int MaxCh>
cudaError_t launch_grad_input_blocks(const void* gy, const void* w, void* gx, const ConvShape& s,
                                     cudaStream_t stream) {
  // per dim: the residues that have members (R) and the largest class's extent (class 0's, E)
  int64_t E[kMaxSpatialDims], R[kMaxSpatialDims];
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    R[i] = s.stride[i] < s.in_size[i] ? s.stride[i] : s.in_size[i];
    E[i] = residue_count(s.in_size[i], s.stride[i], 0);
  }
  const int64_t classes = R[0] * R[1] * R[2];
  const int64_t cblocks = (s.in_channels_per_group() + MaxCh - 1) / MaxCh;
  const int64_t total = s.batch * s.groups * cblocks * classes * E[0] * E[1] * E[2];
  FULLCONV_LAUNCH(blocks_for(total), kThreads, stream, grad_input_kernel<T, MaxCh>)(
      static_cast<const T*>(gy), static_cast<const T*>(w), static_cast<T*>(gx), s, E[0], E[1], E[2], R[1], R[2],
      classes, cblocks);
  return FULLCONV_LAUNCH_STATUS();
}

// The register-blocked kernel's grid, or false where a residue class has more taps than its
// tables hold (kBlockedMaxTaps) or the weights of one output channel for them do not fit.
template <typename T, int C, int P>
bool blocked_grid(const ConvShape& s, BlockedGrid* grid) {
  using A = typename Acc<T>::type;
  constexpr int CS = C == 3 ? 4 : C;
  int64_t taps = 1;
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    grid->residues[i] = s.stride[i] < s.in_size[i] ? s.stride[i] : s.in_size[i];
    grid->extent[i] = residue_count(s.in_size[i], s.stride[i], 0);
    grid->step[i] = s.stride[i] / std::gcd(s.stride[i], s.dilation[i]);
    taps *= (s.kernel[i] + grid->step[i] - 1) / grid->step[i];  // most taps of any class
    if (taps > kBlockedMaxTaps) return false;
  }
  if (taps * CS * int64_t(sizeof(A)) > kBlockedWeightBytes) return false;
  grid->classes = grid->residues[0] * grid->residues[1] * grid->residues[2];
  grid->cblocks = (s.in_channels_per_group() + C - 1) / C;
  grid->segments = (grid->extent[2] + 32 * P - 1) / (32 * P);
  grid->tasks = grid->extent[0] * grid->extent[1] * grid->segments;
  grid->blocks_per_class = (grid->tasks + kBlockedWarps - 1) / kBlockedWarps;
  grid->total_blocks = s.batch * s.groups * grid->cblocks * grid->classes * grid->blocks_per_class;
  return true;
}

template <typename T, int C, int P>
cudaError_t launch_grad_input_blocked(const void* gy, const void* w, void* gx, const ConvShape& s,
                                      cudaStream_t stream, bool* launched) {
  BlockedGrid grid;
  *launched = blocked_grid<T, C, P>(s, &grid);
  if (!*launched) return cudaSuccess;
  const int64_t cap = grid_cap();  // a block-stride loop covers the rest
  const unsigned int blocks = static_cast<unsigned int>(grid.total_blocks < cap ? grid.total_blocks : cap);
  FULLCONV_LAUNCH(blocks, kBlockedWarps * 32, stream, grad_input_blocked_kernel<T, C, P>)(
      static_cast<const T*>(gy), static_cast<const T*>(w), static_cast<T*>(gx), s, grid);
  return FULLCONV_LAUNCH_STATUS();
}

template <typename T>
cudaError_t launch_grad_input(const void* gy, const void* w, void* gx, const ConvShape& s,
                              cudaStream_t stream, DirectKernels kernels) {
  if (s.batch * s.in_channels * s.in_spatial() == 0) return cudaSuccess;
  const int64_t cin_g = s.in_channels_per_group();
  // Register-blocked: all of a group's channels up to 4 (depthwise, RGB stems) with 8 positions
  // per thread for 1 or 2 channels, else 4; blocks of 4 channels below 8, else of 8.
  bool launched = false;
  cudaError_t err = cudaSuccess;
  if (kernels == DirectKernels::kPerElement) {
    // (FULLCONV_CUDA_DIRECT=element: the kernel below)
  } else if (cin_g == 1) err = launch_grad_input_blocked<T, 1, 8>(gy, w, gx, s, stream, &launched);
  else if (cin_g == 2) err = launch_grad_input_blocked<T, 2, 8>(gy, w, gx, s, stream, &launched);
  else if (cin_g == 3) err = launch_grad_input_blocked<T, 3, 4>(gy, w, gx, s, stream, &launched);
  else if (cin_g < 8) err = launch_grad_input_blocked<T, 4, 4>(gy, w, gx, s, stream, &launched);
  else err = launch_grad_input_blocked<T, 8, 4>(gy, w, gx, s, stream, &launched);
  if (launched || err != cudaSuccess) return err;
  // (a class with more taps than the tables hold) one thread per input element and block of
  // channels: all of a group's up to 4, else blocks of 8
  if (cin_g == 1) return launch_grad_input_blocks<T, 1>(gy, w, gx, s, stream);
  if (cin_g <= 4) return launch_grad_input_blocks<T, 4>(gy, w, gx, s, stream);
  return launch_grad_input_blocks<T, 8>(gy, w, gx, s, stream);
}

template <typename T>
cudaError_t launch_grad_weight(const void* gy, const void* x, void* gw, const ConvShape& s,
                               cudaStream_t stream) {
  const int64_t total = s.out_channels * s.in_channels_per_group() * s.kernel_volume();
  if (total == 0) return cudaSuccess;
  const int64_t blocks = total < 65535 * 16 ? total : 65535 * 16;
  FULLCONV_LAUNCH(static_cast<unsigned int>(blocks), kThreads, stream, grad_weight_kernel<T>)(
      static_cast<const T*>(gy), static_cast<const T*>(x), static_cast<T*>(gw), s);
  return FULLCONV_LAUNCH_STATUS();
}

// The register-blocked grad_weight's grid (sm_count sizes the reduction's slices), or false
// where it does not take the problem: more than 4 input channels per group (the tiles' GEMM
// columns are full there), fewer than 16 output channels per group (most of its 64 rows would
// idle), or an x tile over kWeightXTile elements.
template <typename T>
bool weight_grid(const ConvShape& s, int sm_count, WeightGrid* grid) {
  const int64_t cin_g = s.in_channels_per_group();
  if (cin_g > 4 || s.out_channels_per_group() < 16 || s.batch == 0) return false;
  grid->span2 = (kWeightRows - 1) * s.stride[2] + (s.kernel[2] - 1) * s.dilation[2] + 1;
  if (cin_g * s.kernel[0] * s.kernel[1] * grid->span2 > kWeightXTile) return false;  // (so at most kWeightXRows rows)
  for (int i = 0; i < 2; ++i)  // (the rows' tap offsets are 32-bit)
    if ((s.kernel[i] - 1) * s.dilation[i] > INT32_MAX) return false;
  grid->cols = cin_g * s.kernel_volume();
  grid->segments = (s.out_size[2] + kWeightRows - 1) / kWeightRows;
  grid->tiles = s.batch * s.out_size[0] * s.out_size[1] * grid->segments;
  grid->co_blocks = (s.out_channels_per_group() + kWeightChannels - 1) / kWeightChannels;
  grid->passes = (grid->cols + kWeightCols - 1) / kWeightCols;
  const int64_t blocks = s.groups * grid->co_blocks * grid->passes;
  // about four blocks per multiprocessor, each slice at least 8 tiles
  int64_t slices = (4 * int64_t(sm_count > 0 ? sm_count : 1) + blocks - 1) / blocks;
  const int64_t most = (grid->tiles + 7) / 8;
  slices = slices < most ? slices : most;
  slices = slices > 0 ? slices : 1;
  grid->tiles_per_slice = (grid->tiles + slices - 1) / slices;
  grid->slices = (grid->tiles + grid->tiles_per_slice - 1) / grid->tiles_per_slice;
  grid->total_blocks = blocks * grid->slices;
  return true;
}

template <typename T>
size_t launch_weight_workspace(const ConvShape& s, int sm_count) {
  WeightGrid grid;
  if (!weight_grid<T>(s, sm_count, &grid)) return 0;
  return static_cast<size_t>(grid.slices * s.out_channels * grid.cols) * sizeof(typename Acc<T>::type);
}

template <typename T>
cudaError_t launch_grad_weight_blocked(const void* gy, const void* x, void* gw, void* workspace, const ConvShape& s,
                                       int sm_count, cudaStream_t stream) {
  using A = typename Acc<T>::type;
  WeightGrid grid;
  if (!weight_grid<T>(s, sm_count, &grid) || workspace == nullptr) return cudaErrorInvalidValue;
  const int64_t cap = grid_cap();  // a block-stride loop covers the rest
  const unsigned int blocks = static_cast<unsigned int>(grid.total_blocks < cap ? grid.total_blocks : cap);
  FULLCONV_LAUNCH(blocks, 256, stream, grad_weight_blocked_kernel<T>)(
      static_cast<const T*>(gy), static_cast<const T*>(x), static_cast<A*>(workspace), s, grid);
  cudaError_t err = FULLCONV_LAUNCH_STATUS();
  if (err != cudaSuccess) return err;
  const int64_t elements = s.out_channels * grid.cols;
  FULLCONV_LAUNCH(blocks_for(elements), kThreads, stream, sum_slices_kernel<T>)(
      static_cast<const A*>(workspace), static_cast<T*>(gw), elements, grid.slices);
  return FULLCONV_LAUNCH_STATUS();
}

template <typename T>
cudaError_t launch_padded_add(const void* x, Epilogue ep, void* out, int64_t planes,
                              const int64_t* sz, cudaStream_t stream) {
  const int64_t total = planes * sz[0] * sz[1] * sz[2];
  if (total == 0) return cudaSuccess;
  FULLCONV_LAUNCH(blocks_for(total), kThreads, stream, padded_add_kernel<T>)(
      static_cast<const T*>(x), ep, static_cast<T*>(out), planes, sz[0], sz[1], sz[2]);
  return FULLCONV_LAUNCH_STATUS();
}

template <template <typename> class Launch, typename... Args>
auto dispatch(DType dtype, Args... args) -> decltype(Launch<float>::run(args...)) {
  switch (dtype) {
    case DType::kFloat64: return Launch<double>::run(args...);
    case DType::kFloat32: return Launch<float>::run(args...);
    case DType::kFloat16: return Launch<__half>::run(args...);
    case DType::kBFloat16: return Launch<__nv_bfloat16>::run(args...);
  }
  return {};  // (not reached: every DType is a case; cudaSuccess / 0 / false)
}

template <typename T> struct ForwardL {
  static cudaError_t run(const void* x, const void* w, const void* b, const unsigned char* nf,
                         Epilogue ep, void* y, const ConvShape& s, cudaStream_t st, DirectKernels k) {
    return launch_forward<T>(x, w, b, nf, ep, y, s, st, k);
  }
};
template <typename T> struct PaddedAddL {
  static cudaError_t run(const void* x, Epilogue ep, void* out, int64_t planes, const int64_t* sz,
                         cudaStream_t st) {
    return launch_padded_add<T>(x, ep, out, planes, sz, st);
  }
};
template <typename T> struct GradInputL {
  static cudaError_t run(const void* gy, const void* w, void* gx, const ConvShape& s, cudaStream_t st,
                         DirectKernels k) {
    return launch_grad_input<T>(gy, w, gx, s, st, k);
  }
};
// Whether launch_forward runs the register-blocked kernel on this problem.
template <typename T> struct ForwardTakesL {
  static bool run(const ConvShape& s) {
    return with_forward_tile<T>(s, [&](auto co, auto p) {
      ForwardGrid grid;
      return forward_grid<T, decltype(co)::value, decltype(p)::value>(s, &grid);
    });
  }
};
template <typename T> struct WeightWorkspaceL {
  static size_t run(const ConvShape& s, int sm_count) { return launch_weight_workspace<T>(s, sm_count); }
};
template <typename T> struct GradWeightBlockedL {
  static cudaError_t run(const void* gy, const void* x, void* gw, void* ws, const ConvShape& s, int sm_count,
                         cudaStream_t st) {
    return launch_grad_weight_blocked<T>(gy, x, gw, ws, s, sm_count, st);
  }
};
template <typename T> struct GradWeightL {
  static cudaError_t run(const void* gy, const void* x, void* gw, const ConvShape& s, cudaStream_t st) {
    return launch_grad_weight<T>(gy, x, gw, s, st);
  }
};

}  // namespace

cudaError_t forward(DType dtype, const void* x, const void* w, const void* bias,
                    const unsigned char* nonfinite_weight, void* y, const ConvShape& s,
                    cudaStream_t stream) {
  return dispatch<ForwardL>(dtype, x, w, bias, nonfinite_weight, Epilogue(), y, s, stream, DirectKernels::kBlocked);
}

cudaError_t forward_epilogue(DType dtype, const void* x, const void* w, const void* bias,
                             const unsigned char* nonfinite_weight, const Epilogue& epilogue,
                             void* y, const ConvShape& s, cudaStream_t stream, DirectKernels kernels) {
  return dispatch<ForwardL>(dtype, x, w, bias, nonfinite_weight, epilogue, y, s, stream, kernels);
}

cudaError_t padded_add(DType dtype, const void* input, const Epilogue& epilogue, void* out,
                       int64_t planes, const int64_t out_size[kMaxSpatialDims],
                       cudaStream_t stream) {
  return dispatch<PaddedAddL>(dtype, input, epilogue, out, planes, out_size, stream);
}

cudaError_t grad_input(DType dtype, const void* grad_out, const void* w, void* grad_in,
                       const ConvShape& s, cudaStream_t stream, DirectKernels kernels) {
  return dispatch<GradInputL>(dtype, grad_out, w, grad_in, s, stream, kernels);
}

cudaError_t grad_weight(DType dtype, const void* grad_out, const void* x, void* grad_w,
                        const ConvShape& s, cudaStream_t stream) {
  return dispatch<GradWeightL>(dtype, grad_out, x, grad_w, s, stream);
}

bool forward_blocked_takes(DType dtype, const ConvShape& s) { return dispatch<ForwardTakesL>(dtype, s); }

size_t grad_weight_blocked_workspace(DType dtype, const ConvShape& s, int sm_count) {
  return dispatch<WeightWorkspaceL>(dtype, s, sm_count);
}

cudaError_t grad_weight_blocked(DType dtype, const void* grad_out, const void* x, void* grad_w, void* workspace,
                                const ConvShape& s, int sm_count, cudaStream_t stream) {
  return dispatch<GradWeightBlockedL>(dtype, grad_out, x, grad_w, workspace, s, sm_count, stream);
}

}  // namespace cuda
}  // namespace fullconv
