// Implicit-GEMM views of full convolution: the index math of the tiled (tensor-core) CUDA
// kernels, kept torch-free and __host__ __device__ so a host emulator
// (tests/cpp/implicit_gemm_test.cpp) runs the very same mapping, tile skipping and split-K
// partition on any machine.
//
// Two GEMM shapes cover the three passes (per group g; channels c of the reduction, taps k):
//
//  * ImageGemm — C[m, j] = sum_{k, c} A[m, (k, c)] * B[(k, c), j]; a GEMM row m is one
//    position p of a row grid (batch-major), so C is written straight into an (N, C, *spatial)
//    tensor. The reduction runs tap-major in chunks of channels, so a chunk is one tap and a
//    whole chunk can be skipped when its tap meets only padding for every row of a tile.
//      forward:      rows = output positions o;  A = x at i = o*s + k*d - p;  B = w[co, c, k]
//                    (ordered by row regions: border rows apart from interior ones, so
//                    tiles of border rows skip the taps that meet only padding there)
//      grad_input:   one GEMM per residue class r (i = r + s*q, rows = the q of that class);
//                    A = grad_out at o = (r + p - k*d)/s + q, only for the taps of class r
//                    (tap_residue), so no product is ever thrown away; B = w[c_out, ci, k].
//    In both the source position along a dim is  src = p*src_mul + (tap_base - k*tap_step)/tap_div
//    (the division exact for live taps), valid when 0 <= src < src_size.
//
//  * WeightGemm — grad_w[co, ci, k] = sum_{n, o in box(k)} grad_out[n, co, o] * x[n, ci, o*s + k*d - p]:
//    one GEMM per (group, tap), rows co, columns ci, reduced over the batch and the box of
//    outputs at which tap k reads real input (tap_output_range): no product with padding.
//    The reduction is split into slices (split-K) whose fixed-order sum keeps it deterministic.
//
// B operands are packed by the caller: [groups][taps][reduction channels][columns].
#pragma once

#include <cstdint>

#include "conv_shape.h"

// Loops the device code must unroll (their constant indices keep the view in parameter space).
#if defined(__CUDACC__) || defined(__HIPCC__)
#define FULLCONV_UNROLL _Pragma("unroll")
#else
#define FULLCONV_UNROLL
#endif

namespace fullconv {
namespace igemm {

constexpr int kRegions = 27;  // row regions of an ImageGemm: 3 segments per spatial dim

// ----------------------------------------------------------------------------- ImageGemm

struct ImageGemm {
  int64_t groups = 1;
  int64_t batch = 0;
  int64_t rows = 0;       // batch * row_spatial
  int64_t cols = 0;       // output channels of the pass per group (Cout/g fwd, Cin/g grad_input)
  int64_t red = 0;        // reduction channels per tap and group (Cin/g fwd, Cout/g grad_input)
  int64_t taps = 1;
  int64_t kernel[kMaxSpatialDims] = {1, 1, 1};
  int64_t row_size[kMaxSpatialDims] = {1, 1, 1};  // the row grid of positions p
  int64_t row_spatial = 1;
  // source operand A: (batch, src_channels, src_size)
  int64_t src_channels = 0;
  int64_t src_size[kMaxSpatialDims] = {1, 1, 1};
  int64_t src_spatial = 1;
  int64_t src_mul[kMaxSpatialDims] = {1, 1, 1};
  int64_t tap_base[kMaxSpatialDims] = {0, 0, 0};
  int64_t tap_step[kMaxSpatialDims] = {0, 0, 0};
  int64_t tap_div[kMaxSpatialDims] = {1, 1, 1};
  // destination C: (batch, dst_channels, dst_size); position = p*dst_mul + dst_off
  int64_t dst_channels = 0;
  int64_t dst_size[kMaxSpatialDims] = {1, 1, 1};
  int64_t dst_spatial = 1;
  int64_t dst_mul[kMaxSpatialDims] = {1, 1, 1};
  int64_t dst_off[kMaxSpatialDims] = {0, 0, 0};
  // Row regions (forward; see forward_gemm): when `regions`, the rows run region by region,
  // batch-major inside each. Along dim i the positions below cut[i][0] form the low border
  // (some taps read padding), those below cut[i][1] the interior (every tap reads input), the
  // rest the high border; region r = (s0 * 3 + s1) * 3 + s2 takes segment s_i of each dim and
  // starts at row region_first[r]. A tile then holds the rows of one region (bar the few tiles
  // that straddle two), so a tap that meets padding all along a border is skipped for the tile.
  bool regions = false;
  int64_t cut[kMaxSpatialDims][2] = {{0, 1}, {0, 1}, {0, 1}};
  int64_t region_first[kRegions] = {};
};

FULLCONV_HD inline int64_t volume(const int64_t v[kMaxSpatialDims]) { return v[0] * v[1] * v[2]; }

// The fields forward and grad_input share; per-dim geometry is filled by the caller, then
// finish_sizes() derives the volumes.
inline ImageGemm image_gemm_base(const ConvShape& s, int64_t cols, int64_t red, int64_t src_channels,
                                 int64_t dst_channels) {
  ImageGemm v;
  v.groups = s.groups;
  v.batch = s.batch;
  v.cols = cols;
  v.red = red;
  v.taps = s.kernel_volume();
  v.src_channels = src_channels;
  v.dst_channels = dst_channels;
  for (int i = 0; i < kMaxSpatialDims; ++i) v.kernel[i] = s.kernel[i];
  return v;
}

inline void finish_sizes(ImageGemm* v) {
  v->row_spatial = volume(v->row_size);
  v->rows = v->batch * v->row_spatial;
  v->src_spatial = volume(v->src_size);
  v->dst_spatial = volume(v->dst_size);
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    v->cut[i][0] = 0;
    v->cut[i][1] = v->row_size[i];
  }
}

// Segment s (0: low border, 1: interior, 2: high border) of dim i: first position, extent.
FULLCONV_HD inline void region_segment(const ImageGemm& v, int i, int s, int64_t* lo, int64_t* ext) {
  const int64_t a = s == 0 ? 0 : (s == 1 ? v.cut[i][0] : v.cut[i][1]);
  const int64_t b = s == 0 ? v.cut[i][0] : (s == 1 ? v.cut[i][1] : v.row_size[i]);
  *lo = a;
  *ext = b - a;
}

// Sets the per-dim cuts (0 <= cut0 <= cut1 <= row_size) and numbers the regions' rows.
inline void set_regions(ImageGemm* v, const int64_t cut0[kMaxSpatialDims], const int64_t cut1[kMaxSpatialDims]) {
  v->regions = false;
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    v->cut[i][0] = cut0[i];
    v->cut[i][1] = cut1[i];
    v->regions = v->regions || cut0[i] > 0 || cut1[i] < v->row_size[i];
  }
  int64_t first = 0;
  for (int r = 0; r < kRegions; ++r) {
    v->region_first[r] = first;
    const int seg[kMaxSpatialDims] = {r / 9, (r / 3) % 3, r % 3};
    int64_t count = v->batch;
    for (int i = 0; i < kMaxSpatialDims; ++i) {
      int64_t lo, ext;
      region_segment(*v, i, seg[i], &lo, &ext);
      count *= ext;
    }
    first += count;
  }
}

// Forward: rows are the output positions, in plain order (add_forward_regions reorders them).
inline ImageGemm forward_gemm(const ConvShape& s) {
  ImageGemm v = image_gemm_base(s, s.out_channels_per_group(), s.in_channels_per_group(), s.in_channels,
                                s.out_channels);
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    v.row_size[i] = s.out_size[i];
    v.src_size[i] = s.in_size[i];
    v.src_mul[i] = s.stride[i];
    v.tap_base[i] = -s.padding(i);  // src = o*s + k*d - p
    v.tap_step[i] = -s.dilation[i];
    v.tap_div[i] = 1;
    v.dst_size[i] = s.out_size[i];
  }
  finish_sizes(&v);
  return v;
}

// Orders a forward view's rows region by region. Every tap reads input at output o exactly
// when p <= o*s <= L - 1 (p = d*(k-1)): the interior; below it the low border, above it the
// high border.
inline void add_forward_regions(ImageGemm* v, const ConvShape& s) {
  int64_t cut0[kMaxSpatialDims], cut1[kMaxSpatialDims];
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    const int64_t out = s.out_size[i];
    const int64_t lo = ceil_div(s.padding(i), s.stride[i]), hi = floor_div(s.in_size[i] - 1, s.stride[i]) + 1;
    cut0[i] = lo < out ? lo : out;
    cut1[i] = hi < cut0[i] ? cut0[i] : (hi < out ? hi : out);
  }
  set_regions(v, cut0, cut1);
}

// Residue classes of grad_input: one per combination of (i mod stride) over the dims.
FULLCONV_HD inline int64_t residue_classes(const ConvShape& s) {
  return s.stride[0] * s.stride[1] * s.stride[2];
}

FULLCONV_HD inline void residue_of_class(const ConvShape& s, int64_t cls, int64_t r[kMaxSpatialDims]) {
  r[2] = cls % s.stride[2];
  r[1] = (cls / s.stride[2]) % s.stride[1];
  r[0] = cls / (s.stride[2] * s.stride[1]);
}

// grad_input of residue class `cls`: rows are the inputs i = r + s*q of that class.
inline ImageGemm grad_input_gemm(const ConvShape& s, int64_t cls) {
  int64_t r[kMaxSpatialDims];
  residue_of_class(s, cls, r);
  ImageGemm v = image_gemm_base(s, s.in_channels_per_group(), s.out_channels_per_group(), s.out_channels,
                                s.in_channels);
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    v.row_size[i] = residue_count(s.in_size[i], s.stride[i], r[i]);
    v.src_size[i] = s.out_size[i];
    v.src_mul[i] = 1;  // o = q + (r + p - k*d)/s
    v.tap_base[i] = r[i] + s.padding(i);
    v.tap_step[i] = s.dilation[i];
    v.tap_div[i] = s.stride[i];
    v.dst_size[i] = s.in_size[i];
    v.dst_mul[i] = s.stride[i];
    v.dst_off[i] = r[i];
  }
  finish_sizes(&v);
  return v;
}

// The source offset along dim i of kernel coordinate k (src = p*src_mul + off). False when the
// coordinate reaches no row of this GEMM (a grad_input tap of another residue class). The
// division is exact where it is taken (grad_input's strided dims only: tap_div = stride), in
// 32 bits where the operands fit (no 64-bit division routine on the GPU).
FULLCONV_HD inline bool dim_offset(const ImageGemm& v, int i, int64_t k, int64_t* off) {
  const int64_t num = v.tap_base[i] - k * v.tap_step[i];
  const int64_t div = v.tap_div[i];
  if (div == 1) {
    *off = num;
    return true;
  }
  // num >= 0 whenever tap_div != 1 (grad_input: r + p - k*d with p >= k*d). (Written out
  // rather than through divmod_nonneg32: that form made the TF32 gather kernel spill twice as
  // much, 64 bytes instead of 32.)
  if (num >= 0 && num <= INT32_MAX && div <= INT32_MAX) {
    const uint32_t q = uint32_t(num) / uint32_t(div);
    *off = int64_t(q);
    return int64_t(q) * div == num;
  }
  *off = num / div;
  return num % div == 0;
}

// Does a coordinate with source offset `off` along dim i read real input for some position
// of [pmin, pmax] along that dim? Exact: some p with 0 <= p*src_mul + off < src_size.
FULLCONV_HD inline bool dim_live_in_box(const ImageGemm& v, int i, int64_t off, int64_t pmin, int64_t pmax) {
  int64_t lo = ceil_div(-off, v.src_mul[i]);
  int64_t hi = floor_div(v.src_size[i] - 1 - off, v.src_mul[i]);
  if (lo < pmin) lo = pmin;
  if (hi > pmax) hi = pmax;
  return lo <= hi;
}

// Per-dim source offsets of tap `tap` (src = p*src_mul + off). False when the tap reaches no
// row of this GEMM at all (a grad_input tap of another residue class).
FULLCONV_HD inline bool tap_offsets(const ImageGemm& v, int64_t tap, int64_t off[kMaxSpatialDims]) {
  int64_t k[kMaxSpatialDims];
  tap_coords(tap, v.kernel, k);
  bool ok = true;
FULLCONV_UNROLL
  for (int i = 0; i < kMaxSpatialDims; ++i) ok = dim_offset(v, i, k[i], &off[i]) && ok;
  return ok;
}

// Local index l of a grid of extents `ext` (volume `spatial`) -> batch index, position.
FULLCONV_HD inline void decode_grid(int64_t l, const int64_t ext[kMaxSpatialDims], int64_t spatial, int64_t* n,
                                    int64_t p[kMaxSpatialDims]) {
  int64_t sp, rest;
  divmod_nonneg(l, spatial, n, &sp);
  divmod_nonneg(sp, ext[2], &rest, &p[2]);
  divmod_nonneg(rest, ext[1], &p[0], &p[1]);
}

// The region of row m (m < rows; with `regions`): its number, first row, first position and
// extents. The regions before it have first rows <= m, so it is the last such one (empty
// regions share their successor's first row and lose to it).
struct RowRegion {
  int index;
  int64_t first;
  int64_t lo[kMaxSpatialDims], ext[kMaxSpatialDims];
};

FULLCONV_HD inline RowRegion row_region(const ImageGemm& v, int64_t m) {
  RowRegion R;
  // the last region starting at or before m (region_first is nondecreasing; empty regions share
  // their start with the next), by binary search: five probes instead of a pass over all 27
  static_assert(kRegions <= 32, "five halving steps");
  int index = 0;
FULLCONV_UNROLL
  for (int step = 16; step > 0; step /= 2)
    if (index + step < kRegions && v.region_first[index + step] <= m) index += step;
  R.index = index;
  R.first = v.region_first[index];
  const int seg[kMaxSpatialDims] = {R.index / 9, (R.index / 3) % 3, R.index % 3};
FULLCONV_UNROLL
  for (int i = 0; i < kMaxSpatialDims; ++i) region_segment(v, i, seg[i], &R.lo[i], &R.ext[i]);
  return R;
}

// Row m -> batch index and position p on the row grid.
FULLCONV_HD inline void decode_row(const ImageGemm& v, int64_t m, int64_t* n, int64_t p[kMaxSpatialDims]) {
  if (!v.regions) {
    decode_grid(m, v.row_size, v.row_spatial, n, p);
    return;
  }
  const RowRegion R = row_region(v, m);
  decode_grid(m - R.first, R.ext, volume(R.ext), n, p);
FULLCONV_UNROLL
  for (int i = 0; i < kMaxSpatialDims; ++i) p[i] += R.lo[i];
}

// A conservative bounding box [pmin, pmax] of the positions of rows [m0, m1) (m1 > m0,
// clipped to rows): inside one region, along a dim the box is exact while the rows stay on
// one line of the region's grid above it, the region's whole extent otherwise; the whole row
// grid for rows of several regions.
FULLCONV_HD inline void row_box(const ImageGemm& v, int64_t m0, int64_t m1,
                                int64_t pmin[kMaxSpatialDims], int64_t pmax[kMaxSpatialDims]) {
  if (m1 > v.rows) m1 = v.rows;
  int64_t first = 0, lo[kMaxSpatialDims] = {0, 0, 0}, ext[kMaxSpatialDims];
  for (int i = 0; i < kMaxSpatialDims; ++i) ext[i] = v.row_size[i];
  if (v.regions) {
    const RowRegion a = row_region(v, m0), b = row_region(v, m1 - 1);
    if (a.index != b.index) {
      for (int i = 0; i < kMaxSpatialDims; ++i) {
        pmin[i] = 0;
        pmax[i] = v.row_size[i] - 1;
      }
      return;
    }
    first = a.first;
    for (int i = 0; i < kMaxSpatialDims; ++i) {
      lo[i] = a.lo[i];
      ext[i] = a.ext[i];
    }
  }
  const int64_t spatial = volume(ext);
  int64_t n0, n1, a[kMaxSpatialDims], b[kMaxSpatialDims];
  decode_grid(m0 - first, ext, spatial, &n0, a);
  decode_grid(m1 - 1 - first, ext, spatial, &n1, b);
  bool same_line = n0 == n1;  // do the rows share every coordinate above dim i?
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    if (same_line) {
      pmin[i] = lo[i] + a[i];
      pmax[i] = lo[i] + b[i];
      same_line = a[i] == b[i];
    } else {
      pmin[i] = lo[i];
      pmax[i] = lo[i] + ext[i] - 1;
    }
  }
}

// Does the tap (with offsets `off`) read real input for some position in [pmin, pmax]?
// Exact per dim: some p with 0 <= p*src_mul + off < src_size.
FULLCONV_HD inline bool tap_live_in_box(const ImageGemm& v, const int64_t off[kMaxSpatialDims],
                                        const int64_t pmin[kMaxSpatialDims],
                                        const int64_t pmax[kMaxSpatialDims]) {
FULLCONV_UNROLL
  for (int i = 0; i < kMaxSpatialDims; ++i)
    if (!dim_live_in_box(v, i, off[i], pmin[i], pmax[i])) return false;
  return true;
}

// The first tap >= `tap` that reads real input for some position of the box (its offsets
// in `off`), or v.taps when none is left: the live taps a tile of rows runs through.
FULLCONV_HD inline int64_t next_live_tap(const ImageGemm& v, int64_t tap, const int64_t pmin[kMaxSpatialDims],
                                         const int64_t pmax[kMaxSpatialDims], int64_t off[kMaxSpatialDims]) {
  for (; tap < v.taps; ++tap)
    if (tap_offsets(v, tap, off) && tap_live_in_box(v, off, pmin, pmax)) return tap;
  return v.taps;
}

// The live taps of one tile of rows, walked in next_live_tap's order without decoding taps
// (integer divisions, which the kernels' main loops would run at every tap): liveness is
// separable by dim (a tap is live when each of its coordinates is), so the live coordinates
// of each dim are found once per tile, as bits, and the walk is an odometer over those bits.
// Kernels longer than 64 taps along a dim are not walked (live_taps_walkable: the tiled
// kernels leave those to the direct ones).
struct LiveTaps {
  uint64_t live[kMaxSpatialDims];  // bit k: coordinate k of the dim is valid and live in the box
  int k[kMaxSpatialDims];          // the current tap's coordinates
  int64_t tap;                     // the current tap; v.taps when none is left
};

FULLCONV_HD inline bool live_taps_walkable(const ImageGemm& v) {
  return v.kernel[0] <= 64 && v.kernel[1] <= 64 && v.kernel[2] <= 64;
}

// Lowest set bit of m at or above `from` (< 64), or 64 when none.
FULLCONV_HD inline int next_set_bit(uint64_t m, int from) {
  if (from >= 64) return 64;
  m &= ~uint64_t(0) << from;
  if (m == 0) return 64;
#if defined(__CUDA_ARCH__)
  return __ffsll(static_cast<long long>(m)) - 1;
#else
  return __builtin_ctzll(m);
#endif
}

// Moves t->k to the smallest live coordinate triple >= t->k (dim 0 most significant, the
// order of flat taps); false when none is left. (Written out per dim: constant indices keep
// the walk in registers.)
FULLCONV_HD inline bool seek_live_coords(LiveTaps* t) {
  for (;;) {
    const int b0 = next_set_bit(t->live[0], t->k[0]);
    if (b0 >= 64) return false;
    if (b0 != t->k[0]) {
      t->k[0] = b0;
      t->k[1] = t->k[2] = 0;
    }
    const int b1 = next_set_bit(t->live[1], t->k[1]);
    if (b1 >= 64) {  // carry into dim 0
      ++t->k[0];
      t->k[1] = t->k[2] = 0;
      continue;
    }
    if (b1 != t->k[1]) {
      t->k[1] = b1;
      t->k[2] = 0;
    }
    const int b2 = next_set_bit(t->live[2], t->k[2]);
    if (b2 >= 64) {  // carry into dim 1
      ++t->k[1];
      t->k[2] = 0;
      continue;
    }
    t->k[2] = b2;
    return true;
  }
}

// Sets t->tap (and `off`) from the coordinates found, or to v.taps.
FULLCONV_HD inline void settle_live_tap(const ImageGemm& v, bool found, LiveTaps* t, int64_t off[kMaxSpatialDims]) {
  if (!found) {
    t->tap = v.taps;
    return;
  }
  t->tap = (int64_t(t->k[0]) * v.kernel[1] + t->k[1]) * v.kernel[2] + t->k[2];
FULLCONV_UNROLL
  for (int i = 0; i < kMaxSpatialDims; ++i) dim_offset(v, i, t->k[i], &off[i]);
}

// The walk's first live tap (t->tap, offsets in `off`; v.taps when the tile has none, or the
// view is not live_taps_walkable).
FULLCONV_HD inline void first_live_tap(const ImageGemm& v, const int64_t pmin[kMaxSpatialDims],
                                       const int64_t pmax[kMaxSpatialDims], LiveTaps* t,
                                       int64_t off[kMaxSpatialDims]) {
  if (!live_taps_walkable(v)) {
    t->tap = v.taps;
    return;
  }
FULLCONV_UNROLL
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    t->live[i] = 0;
    t->k[i] = 0;
    for (int64_t k = 0; k < v.kernel[i]; ++k) {
      int64_t o;
      if (dim_offset(v, i, k, &o) && dim_live_in_box(v, i, o, pmin[i], pmax[i])) t->live[i] |= uint64_t(1) << k;
    }
  }
  settle_live_tap(v, seek_live_coords(t), t, off);
}

// The next live tap after t->tap (t->tap < v.taps).
FULLCONV_HD inline void next_live_tap(const ImageGemm& v, const int64_t pmin[kMaxSpatialDims],
                                      const int64_t pmax[kMaxSpatialDims], LiveTaps* t,
                                      int64_t off[kMaxSpatialDims]) {
  ++t->k[kMaxSpatialDims - 1];
  settle_live_tap(v, seek_live_coords(t), t, off);
}

// Flat source position of row position p through a tap's offsets, or -1 where the tap meets
// padding there.
FULLCONV_HD inline int64_t src_position(const ImageGemm& v, const int64_t p[kMaxSpatialDims],
                                        const int64_t off[kMaxSpatialDims]) {
  int64_t flat = 0;
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    const int64_t q = p[i] * v.src_mul[i] + off[i];
    if (q < 0 || q >= v.src_size[i]) return -1;
    flat = flat * v.src_size[i] + q;
  }
  return flat;
}

// Offset of element (n, group g's channel 0, src position) in A, or -1 where the tap meets
// padding at this row (the kernel then loads zero; add c * src_spatial for channel c).
FULLCONV_HD inline int64_t src_offset(const ImageGemm& v, int64_t n, const int64_t p[kMaxSpatialDims],
                                      const int64_t off[kMaxSpatialDims], int64_t g) {
  const int64_t flat = src_position(v, p, off);
  return flat < 0 ? -1 : (n * v.src_channels + g * v.red) * v.src_spatial + flat;
}

// The same element in a channels-last copy of A, (batch, src positions, src_channels): the
// reduction channels of a position are adjacent (add c for channel c), so the kernels read
// them as 16-byte vectors.
FULLCONV_HD inline int64_t src_offset_channels_last(const ImageGemm& v, int64_t n, const int64_t p[kMaxSpatialDims],
                                                    const int64_t off[kMaxSpatialDims], int64_t g) {
  const int64_t flat = src_position(v, p, off);
  return flat < 0 ? -1 : (n * v.src_spatial + flat) * v.src_channels + g * v.red;
}

// src_offset_channels_last split for a main loop: the position's flat index is linear in the
// tap's offsets, so the offset of (row, tap) is the row's part plus the tap's part, and the
// row reads real input exactly where each coordinate p*src_mul + off lies inside the source.
// The row's part and its coordinates are found once per tile; a tap then costs a bounds check
// per dim and an add (no multiplication per row). The coordinates are kept in 32 bits (the
// kernels keep a table of these per tile in shared memory): only for views with split_row_fits.
struct SrcRowCL {
  int64_t base;                // offset of channel 0 if every offset were 0 (>= 0; may lie outside)
  int32_t q[kMaxSpatialDims];  // p * src_mul per dim
};

FULLCONV_HD inline bool split_row_fits(const ImageGemm& v) {
  for (int i = 0; i < kMaxSpatialDims; ++i)
    if (v.row_size[i] * v.src_mul[i] >= (int64_t(1) << 31)) return false;
  return true;
}

FULLCONV_HD inline SrcRowCL src_row_channels_last(const ImageGemm& v, int64_t n, const int64_t p[kMaxSpatialDims],
                                                  int64_t g) {
  SrcRowCL r;
  int64_t flat = 0;
FULLCONV_UNROLL
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    const int64_t q = p[i] * v.src_mul[i];
    r.q[i] = static_cast<int32_t>(q);
    flat = flat * v.src_size[i] + q;
  }
  r.base = (n * v.src_spatial + flat) * v.src_channels + g * v.red;
  return r;
}

// The tap's part (same for every row): sum of off * (source elements per step along the dim).
FULLCONV_HD inline int64_t src_tap_delta_channels_last(const ImageGemm& v, const int64_t off[kMaxSpatialDims]) {
  int64_t flat = 0;
FULLCONV_UNROLL
  for (int i = 0; i < kMaxSpatialDims; ++i) flat = flat * v.src_size[i] + off[i];
  return flat * v.src_channels;
}

// One entry of a channels-last tile's tap table: the kernels find every tap's liveness and
// offsets once per tile, in parallel (one thread a tap), into shared memory, so that entering
// a tap in the main loop is a table read instead of a walk. live: the tap reaches real input
// at some row of the tile's box (and, for grad_input, belongs to the view's residue class).
// The offsets are kept in 32 bits: only for views with tap_offsets_fit_int32.
struct TapCL {
  int64_t delta;                 // src_tap_delta_channels_last of the offsets (0 when not live)
  int32_t off[kMaxSpatialDims];  // the tap's source offsets per dim
  int32_t live;
};

// Every tap offset of the view (of any residue class, for grad_input) within 32 bits: an offset
// is (tap_base - k*tap_step) / tap_div, and residue classes move tap_base by less than tap_div.
FULLCONV_HD inline bool tap_offsets_fit_int32(const ImageGemm& v) {
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    const int64_t base = v.tap_base[i] < 0 ? -v.tap_base[i] : v.tap_base[i];
    const int64_t step = v.tap_step[i] < 0 ? -v.tap_step[i] : v.tap_step[i];
    if (base + (v.kernel[i] - 1) * step + v.tap_div[i] >= (int64_t(1) << 31)) return false;
  }
  return true;
}

FULLCONV_HD inline TapCL tap_entry_channels_last(const ImageGemm& v, int64_t tap, const int64_t pmin[kMaxSpatialDims],
                                                 const int64_t pmax[kMaxSpatialDims]) {
  TapCL e;
  int64_t off[kMaxSpatialDims];
  const bool live = tap_offsets(v, tap, off) && tap_live_in_box(v, off, pmin, pmax);
  e.live = live;
  e.delta = live ? src_tap_delta_channels_last(v, off) : 0;
FULLCONV_UNROLL
  for (int i = 0; i < kMaxSpatialDims; ++i) e.off[i] = static_cast<int32_t>(off[i]);
  return e;
}

// src_offset_channels_last(v, n, p, off, g) from the two parts: the row's and the tap table
// entry's (32-bit offsets).
FULLCONV_HD inline int64_t src_offset_channels_last(const ImageGemm& v, const SrcRowCL& r, const TapCL& e) {
FULLCONV_UNROLL
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    // 0 <= q < src_size as one unsigned comparison (q and the offset within 32 bits each)
    if (static_cast<uint64_t>(int64_t(r.q[i]) + e.off[i]) >= static_cast<uint64_t>(v.src_size[i])) return -1;
  }
  return r.base + e.delta;
}

// Flat destination position of row position p.
FULLCONV_HD inline int64_t dst_position(const ImageGemm& v, const int64_t p[kMaxSpatialDims]) {
  int64_t flat = 0;
  for (int i = 0; i < kMaxSpatialDims; ++i) flat = flat * v.dst_size[i] + p[i] * v.dst_mul[i] + v.dst_off[i];
  return flat;
}

// Offset of (n, group g's column 0, destination position of p) in C; add j * dst_spatial.
FULLCONV_HD inline int64_t dst_offset(const ImageGemm& v, int64_t n, const int64_t p[kMaxSpatialDims], int64_t g) {
  return (n * v.dst_channels + g * v.cols) * v.dst_spatial + dst_position(v, p);
}

// The same in a channels-last C, (batch, dst positions, dst_channels); add j for column j.
FULLCONV_HD inline int64_t dst_offset_channels_last(const ImageGemm& v, int64_t n, const int64_t p[kMaxSpatialDims],
                                                    int64_t g) {
  return (n * v.dst_spatial + dst_position(v, p)) * v.dst_channels + g * v.cols;
}

// Offset of packed B element (group g, tap, reduction channel c, column j).
FULLCONV_HD inline int64_t b_offset(const ImageGemm& v, int64_t g, int64_t tap, int64_t c, int64_t j) {
  return ((g * v.taps + tap) * v.red + c) * v.cols + j;
}

// Reduction chunks of `bk` channels per tap: chunk t = tap * chunks_per_tap + c / bk.
FULLCONV_HD inline int64_t chunks_per_tap(const ImageGemm& v, int64_t bk) { return (v.red + bk - 1) / bk; }

// Few reduction channels per tap (a 3-channel stem: tap-major chunks of bk would hold 3 real
// channels each): the reduction then runs flat over r = tap * red + c in chunks of bk that
// span several taps. Tiles skip no chunk in this mode; each element's tap is checked instead.
FULLCONV_HD inline bool flat_reduction(const ImageGemm& v, int64_t bk) { return 2 * v.red <= bk; }
FULLCONV_HD inline int64_t flat_chunks(const ImageGemm& v, int64_t bk) { return (v.taps * v.red + bk - 1) / bk; }

// The forward's view for reduction chunks of bk: row regions unless `regions` is false or the
// reduction is flat (a flat reduction skips no chunk, so regions would only reorder rows).
inline ImageGemm forward_gemm(const ConvShape& s, int64_t bk, bool regions) {
  ImageGemm v = forward_gemm(s);
  if (regions && !flat_reduction(v, bk)) add_forward_regions(&v, s);
  return v;
}

// Offset in A of element (row at n, p; flat reduction index r) of group g, or -1 where it is
// absent (its tap meets padding at this row, belongs to another residue class, or r is past
// the reduction's end). The B element of r is b_offset(v, g, r / red, r % red, j).
FULLCONV_HD inline int64_t flat_src_offset(const ImageGemm& v, int64_t n, const int64_t p[kMaxSpatialDims],
                                           int64_t r, int64_t g) {
  if (r >= v.taps * v.red) return -1;
  int64_t tap, c;
  divmod_nonneg(r, v.red, &tap, &c);
  int64_t off[kMaxSpatialDims];
  if (!tap_offsets(v, tap, off)) return -1;
  const int64_t base = src_offset(v, n, p, off, g);
  return base < 0 ? -1 : base + c * v.src_spatial;
}

// The flat reduction indices r, r + step, r + 2*step, ... of one row, walked with one division
// at the start (flat_src_offset divides at every index): the tap and channel of r, and the
// tap's coordinates, carried forward like an odometer.
struct FlatWalk {
  int64_t tap, c;
  int64_t k[kMaxSpatialDims];
};

FULLCONV_HD inline void flat_walk_start(const ImageGemm& v, int64_t r, FlatWalk* w) {
  divmod_nonneg(r, v.red, &w->tap, &w->c);
  w->k[0] = w->k[1] = w->k[2] = 0;
  if (w->tap < v.taps) tap_coords(w->tap, v.kernel, w->k);
}

FULLCONV_HD inline void flat_walk_step(const ImageGemm& v, int64_t step, FlatWalk* w) {
  w->c += step;
  while (w->c >= v.red) {
    w->c -= v.red;
    ++w->tap;
    if (++w->k[2] == v.kernel[2]) {
      w->k[2] = 0;
      if (++w->k[1] == v.kernel[1]) {
        w->k[1] = 0;
        ++w->k[0];
      }
    }
  }
}

// flat_src_offset(v, n, p, r, g) of the walk's current index r.
FULLCONV_HD inline int64_t flat_walk_offset(const ImageGemm& v, const FlatWalk& w, int64_t n,
                                            const int64_t p[kMaxSpatialDims], int64_t g) {
  if (w.tap >= v.taps) return -1;
  int64_t off[kMaxSpatialDims];
  bool ok = true;
FULLCONV_UNROLL
  for (int i = 0; i < kMaxSpatialDims; ++i) ok = dim_offset(v, i, w.k[i], &off[i]) && ok;
  if (!ok) return -1;
  const int64_t base = src_offset(v, n, p, off, g);
  return base < 0 ? -1 : base + w.c * v.src_spatial;
}

// ----------------------------------------------------------------------------- WeightGemm

struct WeightGemm {
  ConvShape s;
  int64_t groups = 1;
  int64_t taps = 1;   // GEMMs per group: the kernel's taps (1 when flat)
  int64_t rows = 0;   // output channels per group
  int64_t cols = 0;   // input channels per group (flat: input channels x taps)
  int64_t splits = 1; // slices of the reduction (split-K), summed in order afterwards
  // Flat: few input channels per group (a 3-channel stem would fill 3 of a tile's 64
  // columns), so one GEMM per group whose columns are the (input channel, tap) pairs,
  // j = ci * kernel_volume + tap, reduced over every output position; a column reads x at
  // o*s + k*d - p, zero where that is padding. grad_weight's layout is then [g][row][j].
  bool flat = false;
};

// The flat form pays for the padding products of its whole box, so it is taken only where a
// column tile of `bn` would hold at most half its width in input channels.
FULLCONV_HD inline bool flat_weight_columns(const ConvShape& s, int64_t bn) {
  return 2 * s.in_channels_per_group() <= bn && s.kernel_volume() > 1;
}

// A flat column: its input channel and, per dim, the offset k*d - p of its tap.
struct FlatColumn {
  int64_t ci = 0;
  int64_t off[kMaxSpatialDims] = {0, 0, 0};
};

FULLCONV_HD inline FlatColumn flat_column(const WeightGemm& v, int64_t j) {
  const int64_t taps = v.s.kernel_volume();
  FlatColumn c;
  c.ci = j / taps;
  int64_t k[kMaxSpatialDims];
  tap_coords(j % taps, v.s.kernel, k);
  for (int i = 0; i < kMaxSpatialDims; ++i) c.off[i] = k[i] * v.s.dilation[i] - v.s.padding(i);
  return c;
}

// Rows of the tensor-core grad_weight tile: 64 where the output channels per group (the
// GEMM's rows) fit, so no 128-row tile runs half empty; 128 otherwise.
inline int64_t weight_tile_rows(const ConvShape& s) { return s.out_channels_per_group() <= 64 ? 64 : 128; }

// Box of outputs at which tap `tap` reads real input: lo and extent per dim; returns the
// reduction length batch * volume (0 when the tap meets only padding, e.g. a huge dilation).
FULLCONV_HD inline int64_t tap_box(const WeightGemm& v, int64_t tap, int64_t lo[kMaxSpatialDims],
                                   int64_t ext[kMaxSpatialDims], int64_t shift[kMaxSpatialDims]) {
  if (v.flat) {  // every output position (each column checks its own input position)
    for (int i = 0; i < kMaxSpatialDims; ++i) {
      lo[i] = 0;
      ext[i] = v.s.out_size[i];
      shift[i] = 0;
    }
    return v.s.batch * v.s.out_spatial();
  }
  int64_t k[kMaxSpatialDims];
  tap_coords(tap, v.s.kernel, k);
  int64_t vol = 1;
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    int64_t hi;
    tap_output_range(k[i], v.s.in_size[i], v.s.kernel[i], v.s.stride[i], v.s.dilation[i], &lo[i], &hi);
    ext[i] = hi >= lo[i] ? hi - lo[i] + 1 : 0;
    shift[i] = k[i] * v.s.dilation[i] - v.s.padding(i);  // i = o*s + shift
    vol *= ext[i];
  }
  return v.s.batch * vol;
}

// A reduction position of a WeightGemm: batch index n and the output position lo + q in the
// tap's box. Decoded once by division, then advanced by addition with carries (the kernels
// step every thread's position by BK per chunk).
struct ReductionPos {
  int64_t n = 0;
  int64_t q[kMaxSpatialDims] = {0, 0, 0};
};

FULLCONV_HD inline ReductionPos decode_reduction_pos(int64_t e, const int64_t ext[kMaxSpatialDims]) {
  ReductionPos r;
  const int64_t vol = ext[0] * ext[1] * ext[2];
  // (plain division: once per thread and tile; divmod_nonneg's branches here made a float32
  // grad_weight kernel spill in its main loop)
  r.n = e / vol;
  int64_t rest = e % vol;
  r.q[2] = rest % ext[2];
  rest /= ext[2];
  r.q[1] = rest % ext[1];
  r.q[0] = rest / ext[1];
  return r;
}

// Position of e + step from that of e (step >= 0; ext all >= 1).
FULLCONV_HD inline void advance_reduction_pos(ReductionPos* r, int64_t step, const int64_t ext[kMaxSpatialDims]) {
  // (divmod_carry: the kernels step every chunk, so no 64-bit division on the usual carries)
  r->q[2] += step;
  if (r->q[2] < ext[2]) return;
  int64_t carry;
  divmod_carry(r->q[2], ext[2], &carry, &r->q[2]);
  r->q[1] += carry;
  if (r->q[1] < ext[1]) return;
  divmod_carry(r->q[1], ext[1], &carry, &r->q[1]);
  r->q[0] += carry;
  if (r->q[0] < ext[0]) return;
  divmod_carry(r->q[0], ext[0], &carry, &r->q[0]);
  r->n += carry;
}

// Output-space and input-space flat offsets of a reduction position (the input it meets
// through the tap: i = o*s + shift).
FULLCONV_HD inline void reduction_offsets(const WeightGemm& v, const ReductionPos& r, const int64_t lo[kMaxSpatialDims],
                                          const int64_t shift[kMaxSpatialDims], int64_t* out_flat, int64_t* in_flat) {
  int64_t of = 0, inf = 0;
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    const int64_t o = lo[i] + r.q[i];
    of = of * v.s.out_size[i] + o;
    inf = inf * v.s.in_size[i] + o * v.s.stride[i] + shift[i];
  }
  *out_flat = of;
  *in_flat = inf;
}

// A reduction position with its element offsets in channels-last copies of grad_output and x
// (weight_gemm_cl_kernel's operands): gy = (n*out_spatial + of)*out_channels and
// x = (n*in_spatial + inf)*in_channels, with of/inf of reduction_offsets. Both are linear in
// (n, q), so a step adds step * (offset per q[2]) and each carry a constant of its dim: the
// 32-bit cursor below starts from this one and moves by addition, without multiplying a
// position out per chunk.
struct ReductionCursor {
  ReductionPos pos;
  int64_t gy = 0, x = 0;
};

FULLCONV_HD inline ReductionCursor reduction_cursor(const WeightGemm& v, int64_t e, const int64_t lo[kMaxSpatialDims],
                                                    const int64_t ext[kMaxSpatialDims],
                                                    const int64_t shift[kMaxSpatialDims]) {
  ReductionCursor c;
  c.pos = decode_reduction_pos(e, ext);
  int64_t of, inf;
  reduction_offsets(v, c.pos, lo, shift, &of, &inf);
  c.gy = (c.pos.n * v.s.out_spatial() + of) * v.s.out_channels;
  c.x = (c.pos.n * v.s.in_spatial() + inf) * v.s.in_channels;
  return c;
}

// The channels-last grad_weight tiles' cursor in 32-bit coordinates (weight_positions_fit_int32:
// a tap box has fewer than 2^30 positions) with its constants computed once per tile
// (ReductionSteps, which the kernels keep in shared memory): a chunk adds the two per-step
// offsets and compares one coordinate; a carry reads its dim's constants. Same offsets as
// ReductionCursor.
struct ReductionSteps {
  int64_t step_gy = 0, step_x = 0;                                   // a step of `step` along q[2]
  int64_t carry_gy[kMaxSpatialDims] = {}, carry_x[kMaxSpatialDims] = {};  // a unit carry out of dim i
  int32_t ext[kMaxSpatialDims] = {1, 1, 1};
  int32_t step = 0;
};
struct ReductionCursor32 {
  int32_t n = 0, q[kMaxSpatialDims] = {0, 0, 0};
  int64_t gy = 0, x = 0;
};

FULLCONV_HD inline bool weight_positions_fit_int32(const ConvShape& s) {
  // every tap box lies inside the output; the margin keeps q + step within 32 bits
  return s.batch * s.out_spatial() < (int64_t(1) << 30);
}

FULLCONV_HD inline ReductionSteps reduction_steps(const WeightGemm& v, int32_t step, const int64_t ext[kMaxSpatialDims]) {
  const ConvShape& s = v.s;
  // positions per unit of q[i] in grad_output (o) and in x (in), and per sample (index 3)
  const int64_t o[4] = {s.out_size[1] * s.out_size[2], s.out_size[2], 1, s.out_spatial()};
  const int64_t in[4] = {s.stride[0] * s.in_size[1] * s.in_size[2], s.stride[1] * s.in_size[2], s.stride[2],
                         s.in_spatial()};
  ReductionSteps k;
  k.step = step;
  k.step_gy = step * o[2] * s.out_channels;
  k.step_x = step * in[2] * s.in_channels;
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    const int outer = i == 0 ? 3 : i - 1;
    k.carry_gy[i] = (o[outer] - ext[i] * o[i]) * s.out_channels;
    k.carry_x[i] = (in[outer] - ext[i] * in[i]) * s.in_channels;
    k.ext[i] = static_cast<int32_t>(ext[i]);
  }
  return k;
}

FULLCONV_HD inline ReductionCursor32 reduction_cursor32(const WeightGemm& v, int64_t e, const int64_t lo[kMaxSpatialDims],
                                                        const int64_t ext[kMaxSpatialDims],
                                                        const int64_t shift[kMaxSpatialDims]) {
  const ReductionCursor c = reduction_cursor(v, e, lo, ext, shift);
  ReductionCursor32 r;
  r.n = static_cast<int32_t>(c.pos.n);
  for (int i = 0; i < kMaxSpatialDims; ++i) r.q[i] = static_cast<int32_t>(c.pos.q[i]);
  r.gy = c.gy;
  r.x = c.x;
  return r;
}

// q >= ext >= 1: moves q back below ext and returns how many times ext came off (usually once:
// a step is at most one chunk).
FULLCONV_HD inline int32_t carry_out(int32_t* q, int32_t ext) {
  *q -= ext;
  if (*q < ext) return 1;
  const int32_t more = static_cast<int32_t>(static_cast<uint32_t>(*q) / static_cast<uint32_t>(ext));
  *q -= more * ext;
  return 1 + more;
}

// The cursor of e + k.step from that of e (k: reduction_steps of the same box; ext all >= 1).
FULLCONV_HD inline void advance_reduction_cursor32(ReductionCursor32* c, const ReductionSteps& k) {
  c->gy += k.step_gy;
  c->x += k.step_x;
  c->q[2] += k.step;
  if (c->q[2] < k.ext[2]) return;
  // carries out of dim 2, 1, 0
  int32_t carry = carry_out(&c->q[2], k.ext[2]);
  c->gy += carry * k.carry_gy[2];
  c->x += carry * k.carry_x[2];
  c->q[1] += carry;
  if (c->q[1] < k.ext[1]) return;
  carry = carry_out(&c->q[1], k.ext[1]);
  c->gy += carry * k.carry_gy[1];
  c->x += carry * k.carry_x[1];
  c->q[0] += carry;
  if (c->q[0] < k.ext[0]) return;
  carry = carry_out(&c->q[0], k.ext[0]);
  c->gy += carry * k.carry_gy[0];
  c->x += carry * k.carry_x[0];
  c->n += carry;
}

// Offset in x (N, C, *in) of flat column c at reduction position r (output position r.q: the
// flat box starts at 0) for group g, or -1 where it meets padding.
FULLCONV_HD inline int64_t flat_x_offset(const WeightGemm& v, const ReductionPos& r, const FlatColumn& c, int64_t g) {
  int64_t flat = 0;
  for (int i = 0; i < kMaxSpatialDims; ++i) {
    const int64_t in = r.q[i] * v.s.stride[i] + c.off[i];
    if (in < 0 || in >= v.s.in_size[i]) return -1;
    flat = flat * v.s.in_size[i] + in;
  }
  return (r.n * v.s.in_channels + g * v.s.in_channels_per_group() + c.ci) * v.s.in_spatial() + flat;
}

// Chunks [*c0, *c1) of `bk` reduction elements that slice `slice` of `splits` covers, out of
// the ceil(len / bk) chunks of a reduction of length len: contiguous, ordered, disjoint, and
// together every chunk exactly once.
FULLCONV_HD inline void slice_chunks(int64_t len, int64_t bk, int64_t splits, int64_t slice,
                                     int64_t* c0, int64_t* c1) {
  const int64_t chunks = (len + bk - 1) / bk;
  *c0 = div_nonneg(chunks * slice, splits);
  *c1 = div_nonneg(chunks * (slice + 1), splits);
}

// Split-K: enough blocks to fill the GPU (target_blocks, e.g. 4 per SM) while every slice keeps
// at least min_chunks chunks of its longest reduction and the partial sums stay below
// max_workspace_elems accumulator elements.
inline WeightGemm weight_gemm(const ConvShape& s, int64_t bm, int64_t bn, int64_t bk,
                              int64_t target_blocks, int64_t min_chunks, int64_t max_workspace_elems) {
  WeightGemm v;
  v.s = s;
  v.groups = s.groups;
  v.flat = flat_weight_columns(s, bn);
  v.taps = v.flat ? 1 : s.kernel_volume();
  v.rows = s.out_channels_per_group();
  v.cols = s.in_channels_per_group() * (v.flat ? s.kernel_volume() : 1);
  int64_t longest = 0, lo[kMaxSpatialDims], ext[kMaxSpatialDims], shift[kMaxSpatialDims];
  for (int64_t t = 0; t < v.taps; ++t) {
    const int64_t len = tap_box(v, t, lo, ext, shift);
    if (len > longest) longest = len;
  }
  const int64_t tiles = ((v.rows + bm - 1) / bm) * ((v.cols + bn - 1) / bn) * v.groups * v.taps;
  const int64_t weight_elems = v.groups * v.rows * v.cols * v.taps;
  int64_t splits = tiles > 0 ? (target_blocks + tiles - 1) / tiles : 1;
  const int64_t by_length = ((longest + bk - 1) / bk) / (min_chunks > 0 ? min_chunks : 1);
  if (splits > by_length) splits = by_length;
  if (weight_elems > 0 && splits * weight_elems > max_workspace_elems) splits = max_workspace_elems / weight_elems;
  if (splits > 65535) splits = 65535;  // grid dimension y
  v.splits = splits >= 1 ? splits : 1;
  return v;
}

// Partial-sum layout of split-K: [slice][group*taps + tap][col][row] (rows contiguous).
FULLCONV_HD inline int64_t partial_offset(const WeightGemm& v, int64_t slice, int64_t gt, int64_t row, int64_t col) {
  return ((slice * v.groups * v.taps + gt) * v.cols + col) * v.rows + row;
}

// grad_weight element (group g, row co, col ci, tap) in the (Cout, Cin/g, *kernel) tensor
// (flat: col j, tap 0, which is the same element).
FULLCONV_HD inline int64_t weight_offset(const WeightGemm& v, int64_t g, int64_t row, int64_t col, int64_t tap) {
  return ((g * v.rows + row) * v.cols + col) * v.taps + tap;
}

}  // namespace igemm
}  // namespace fullconv
