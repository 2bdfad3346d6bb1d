// Shape and index math of full convolution: the one place it lives.
//
// Full correlation along one spatial dim (input length L, taps 0..K-1, dilation d, stride s):
//   padding p = d*(K-1) on both sides (implicit, never materialised)
//   Lout      = (L + d*(K-1) - 1) / s + 1
//   y[o]      = sum_k w[k] * x[o*s + k*d - p]   (terms whose input index leaves [0, L) are absent)
//
// Two views of the same index relation i = o*s + k*d - p are used by the kernels:
//  * direct ("where does tap k meet real input?"): tap_output_range() gives the outputs at
//    which tap k reads inside [0, L), so a direct kernel loops only over real products;
//    tap_range() is the same relation seen from one output (which taps reach it).
//  * scatter ("where does input i go through tap k?"): i reaches an output iff
//    (i + p - k*d) is a multiple of s, and then always a valid one, o = (i + p - k*d) / s.
//    Inputs fall into s residue classes r = i mod s; tap k serves exactly one class,
//    tap_residue(); within a class the inputs r, r+s, r+2s, ... map to consecutive outputs
//    starting at tap_output_start(). This is the padding-free GEMM + col2im formulation.
//
// Plain C++ with no torch includes; __host__ __device__ so the CUDA kernels share it.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FULLCONV_HD __host__ __device__
#else
#define FULLCONV_HD
#endif

namespace fullconv {

constexpr int kMaxSpatialDims = 3;

FULLCONV_HD inline int64_t full_padding(int64_t kernel, int64_t dilation) {
  return dilation * (kernel - 1);
}

// Output length of a full convolution along one dim (L >= 1, K >= 1, s >= 1, d >= 1).
FULLCONV_HD inline int64_t full_output_size(int64_t L, int64_t K, int64_t s, int64_t d) {
  return (L + d * (K - 1) - 1) / s + 1;
}

// q = a / b, r = a % b for a >= 0, b > 0: in 32 bits where both fit. A GPU has no 64-bit
// integer division instruction (each is a call of a long routine), and the kernels divide
// small indices (taps, channels) inside their main loops.
FULLCONV_HD inline void divmod_nonneg32(int64_t a, int64_t b, int64_t* q, int64_t* r) {
  if (a <= INT32_MAX && b <= INT32_MAX) {
    const uint32_t q32 = uint32_t(a) / uint32_t(b);
    *q = int64_t(q32);
    *r = a - int64_t(q32) * b;
  } else {
    *q = a / b;
    *r = a - *q * b;
  }
}
// The same, first checking for b == 1 (strides, dilations, unit extents: the common divisor
// of the kernels' setup code).
FULLCONV_HD inline void divmod_nonneg(int64_t a, int64_t b, int64_t* q, int64_t* r) {
  if (b == 1) {
    *q = a;
    *r = 0;
  } else {
    divmod_nonneg32(a, b, q, r);
  }
}

// a / b for a >= 0, b > 0, as divmod_nonneg.
FULLCONV_HD inline int64_t div_nonneg(int64_t a, int64_t b) {
  int64_t q, r;
  divmod_nonneg(a, b, &q, &r);
  return q;
}

// Rounded-down / rounded-up a / b for b > 0 (through divmod_nonneg: kernels call these in
// their per-tile setup, where a 64-bit division routine per call would cost more than the
// tile's multiply-adds on short reductions).
FULLCONV_HD inline int64_t floor_div(int64_t a, int64_t b) {
  return (a >= 0) ? div_nonneg(a, b) : -div_nonneg(-a + b - 1, b);
}
FULLCONV_HD inline int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

// The relation i = o*s + k*d - pad for an arbitrary implicit padding `pad` (full convolution
// has pad = d*(K-1); a stride-1 grad_input, seen as a correlation of grad_output with the
// flipped kernel, has pad = 0). Outputs [*o_lo, *o_hi] (inclusive, within [0, Lout); empty
// when o_lo > o_hi) at which tap k reads a real input, 0 <= i < L.
FULLCONV_HD inline void tap_output_range_padded(int64_t k, int64_t L, int64_t Lout, int64_t s,
                                                int64_t d, int64_t pad, int64_t* o_lo,
                                                int64_t* o_hi) {
  const int64_t shift = pad - k * d;
  const int64_t lo = ceil_div(shift, s), hi = floor_div(L - 1 + shift, s);
  *o_lo = lo > 0 ? lo : 0;
  *o_hi = hi < Lout - 1 ? hi : Lout - 1;
}

// Taps [*k_lo, *k_hi] (inclusive; empty when k_lo > k_hi) whose input index o*s + k*d - pad
// lies inside [0, L) for output o: the gather view, for kernels that own one output each.
FULLCONV_HD inline void tap_range_padded(int64_t o, int64_t L, int64_t K, int64_t s, int64_t d,
                                         int64_t pad, int64_t* k_lo, int64_t* k_hi) {
  const int64_t base = o * s - pad;  // input index of tap 0
  const int64_t lo = ceil_div(-base, d), hi = floor_div(L - 1 - base, d);
  *k_lo = lo > 0 ? lo : 0;
  *k_hi = hi < K - 1 ? hi : K - 1;
}

// Outputs [*o_lo, *o_hi] (inclusive; empty when o_lo > o_hi) at which tap k reads a real
// input element, i.e. 0 <= o*s + k*d - p < L. Outside that range the tap meets padding and
// a direct kernel skips it.
FULLCONV_HD inline void tap_output_range(int64_t k, int64_t L, int64_t K, int64_t s, int64_t d,
                                         int64_t* o_lo, int64_t* o_hi) {
  tap_output_range_padded(k, L, full_output_size(L, K, s, d), s, d, full_padding(K, d), o_lo, o_hi);
}

// Taps reaching output o of a full convolution (pad = d*(K-1)).
FULLCONV_HD inline void tap_range(int64_t o, int64_t L, int64_t K, int64_t s, int64_t d,
                                  int64_t* k_lo, int64_t* k_hi) {
  tap_range_padded(o, L, K, s, d, full_padding(K, d), k_lo, k_hi);
}

// Residue class (input index mod s) of the inputs that tap k sends to some output.
FULLCONV_HD inline int64_t tap_residue(int64_t k, int64_t K, int64_t s, int64_t d) {
  const int64_t p = full_padding(K, d);
  // p - k*d >= 0 for every tap, so the C++ remainder is the mathematical one.
  int64_t q, rem;
  divmod_nonneg(p - k * d, s, &q, &rem);
  return rem == 0 ? 0 : s - rem;
}

// Output position reached by input r (the first input of its residue class) through tap k.
// Requires tap_residue(k, K, s, d) == r.
FULLCONV_HD inline int64_t tap_output_start(int64_t r, int64_t k, int64_t K, int64_t s,
                                            int64_t d) {
  return div_nonneg(r + full_padding(K, d) - k * d, s);
}

// Number of inputs i in [0, L) with i mod s == r.
FULLCONV_HD inline int64_t residue_count(int64_t L, int64_t s, int64_t r) {
  return (r < L) ? div_nonneg(L - r + s - 1, s) : 0;
}

// The same where a is usually below 2b (a running index carried into the next dim): one
// comparison and a subtraction then, a division otherwise.
FULLCONV_HD inline void divmod_carry(int64_t a, int64_t b, int64_t* q, int64_t* r) {
  if (a < b) {
    *q = 0;
    *r = a;
  } else if (a - b < b) {
    *q = 1;
    *r = a - b;
  } else {
    divmod_nonneg32(a, b, q, r);
  }
}

// Kernel coordinates (k0, k1, k2) of flat tap index `tap` (row-major over the kernel).
FULLCONV_HD inline void tap_coords(int64_t tap, const int64_t kernel[kMaxSpatialDims],
                                   int64_t k[kMaxSpatialDims]) {
  int64_t rest;
  divmod_nonneg(tap, kernel[2], &rest, &k[2]);
  divmod_nonneg(rest, kernel[1], &k[0], &k[1]);
}

// A full convolution problem, normalised to three spatial dims: an N-d problem (N = ndim)
// occupies the last N slots, the leading unused slots have size 1, kernel 1, stride 1,
// dilation 1, so every kernel can loop over three dims.
struct ConvShape {
  int ndim = 0;
  int64_t batch = 0;
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t groups = 1;
  int64_t in_size[kMaxSpatialDims] = {1, 1, 1};
  int64_t kernel[kMaxSpatialDims] = {1, 1, 1};
  int64_t stride[kMaxSpatialDims] = {1, 1, 1};
  int64_t dilation[kMaxSpatialDims] = {1, 1, 1};
  int64_t out_size[kMaxSpatialDims] = {1, 1, 1};

  FULLCONV_HD int64_t in_channels_per_group() const { return in_channels / groups; }
  FULLCONV_HD int64_t out_channels_per_group() const { return out_channels / groups; }
  FULLCONV_HD int64_t in_spatial() const { return in_size[0] * in_size[1] * in_size[2]; }
  FULLCONV_HD int64_t out_spatial() const { return out_size[0] * out_size[1] * out_size[2]; }
  FULLCONV_HD int64_t kernel_volume() const { return kernel[0] * kernel[1] * kernel[2]; }
  FULLCONV_HD bool unit_stride() const { return stride[0] == 1 && stride[1] == 1 && stride[2] == 1; }
  FULLCONV_HD int64_t padding(int dim) const { return full_padding(kernel[dim], dilation[dim]); }
  FULLCONV_HD void compute_output_size() {
    for (int i = 0; i < kMaxSpatialDims; ++i)
      out_size[i] = full_output_size(in_size[i], kernel[i], stride[i], dilation[i]);
  }
};

}  // namespace fullconv
