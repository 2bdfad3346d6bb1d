// Register-blocked kernels, written once and compiled once per instruction set: the file
// including this header defines
//   FULLCONV_BLOCKED_ISA     namespace of this build (avx2 | avx512)
//   FULLCONV_TARGET          function attribute enabling its instructions
//   FULLCONV_BLOCKED_WIDTH   vector width in bits (256 | 512)
//   FULLCONV_BLOCKED_BF16    (optional, 512 only) 1: the bfloat16 build, whose target adds
//                            AVX512_BF16 and which gets only forward_bf16
// and gets fullconv::blocked::FULLCONV_BLOCKED_ISA::{forward, grad_weight}. Only functions
// carrying FULLCONV_TARGET use the wider instructions (no file-wide -m flags), so the library
// still loads on CPUs without them; blocked_kernels.cpp picks the build at run time. See
// blocked_kernels.h for the problem and layouts. No torch headers here.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "../conv_shape.h"
#include "blocked_kernels.h"
#include "transpose8.h"

#if FULLCONV_BLOCKED_X86
#include <immintrin.h>

namespace fullconv {
namespace blocked {
namespace FULLCONV_BLOCKED_ISA {

namespace {

constexpr int kMaxPositions = kWidePositions;
static_assert(kWidePositions == 8, "forward_tile_n has the cases of up to 8 positions");

template <typename T>
struct Simd;

#if FULLCONV_BLOCKED_WIDTH == 512
template <>
struct Simd<float> {
  using V = __m512;
  using M = __mmask16;
  static constexpr int kLanes = 16;
  FULLCONV_TARGET static inline V zero() { return _mm512_setzero_ps(); }
  FULLCONV_TARGET static inline V load(const float* p) { return _mm512_loadu_ps(p); }
  FULLCONV_TARGET static inline void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  FULLCONV_TARGET static inline V masked_load(const float* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  FULLCONV_TARGET static inline void masked_store(float* p, M m, V v) { _mm512_mask_storeu_ps(p, m, v); }
  FULLCONV_TARGET static inline V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  FULLCONV_TARGET static inline V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  FULLCONV_TARGET static inline V add(V a, V b) { return _mm512_add_ps(a, b); }
  // the first n lanes (n <= 0: none, n >= 16: all)
  FULLCONV_TARGET static inline M mask(int64_t n) {
    return static_cast<M>(n <= 0 ? 0u : n >= 16 ? 0xFFFFu : (1u << n) - 1u);
  }
  // lanes [lo, hi) (0 <= lo, hi <= 16)
  FULLCONV_TARGET static inline M mask_range(int64_t lo, int64_t hi) {
    return static_cast<M>(mask(hi) & ~mask(lo));
  }
};

template <>
struct Simd<double> {
  using V = __m512d;
  using M = __mmask8;
  static constexpr int kLanes = 8;
  FULLCONV_TARGET static inline V zero() { return _mm512_setzero_pd(); }
  FULLCONV_TARGET static inline V load(const double* p) { return _mm512_loadu_pd(p); }
  FULLCONV_TARGET static inline void store(double* p, V v) { _mm512_storeu_pd(p, v); }
  FULLCONV_TARGET static inline V masked_load(const double* p, M m) { return _mm512_maskz_loadu_pd(m, p); }
  FULLCONV_TARGET static inline void masked_store(double* p, M m, V v) { _mm512_mask_storeu_pd(p, m, v); }
  FULLCONV_TARGET static inline V broadcast(const double* p) { return _mm512_set1_pd(*p); }
  FULLCONV_TARGET static inline V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  FULLCONV_TARGET static inline V add(V a, V b) { return _mm512_add_pd(a, b); }
  FULLCONV_TARGET static inline M mask(int64_t n) {
    return static_cast<M>(n <= 0 ? 0u : n >= 8 ? 0xFFu : (1u << n) - 1u);
  }
  FULLCONV_TARGET static inline M mask_range(int64_t lo, int64_t hi) {
    return static_cast<M>(mask(hi) & ~mask(lo));
  }
};
#else
template <>
struct Simd<float> {
  using V = __m256;
  using M = __m256i;
  static constexpr int kLanes = 8;
  FULLCONV_TARGET static inline V zero() { return _mm256_setzero_ps(); }
  FULLCONV_TARGET static inline V load(const float* p) { return _mm256_loadu_ps(p); }
  FULLCONV_TARGET static inline void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  FULLCONV_TARGET static inline V masked_load(const float* p, M m) { return _mm256_maskload_ps(p, m); }
  FULLCONV_TARGET static inline void masked_store(float* p, M m, V v) { _mm256_maskstore_ps(p, m, v); }
  FULLCONV_TARGET static inline V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  FULLCONV_TARGET static inline V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  FULLCONV_TARGET static inline V add(V a, V b) { return _mm256_add_ps(a, b); }
  // the first n lanes (n <= 0: none, n >= 8: all)
  FULLCONV_TARGET static inline M mask(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::clamp<int64_t>(n, 0, 8))),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  // lanes [lo, hi)
  FULLCONV_TARGET static inline M mask_range(int64_t lo, int64_t hi) {
    return _mm256_andnot_si256(mask(lo), mask(hi));
  }
};

template <>
struct Simd<double> {
  using V = __m256d;
  using M = __m256i;
  static constexpr int kLanes = 4;
  FULLCONV_TARGET static inline V zero() { return _mm256_setzero_pd(); }
  FULLCONV_TARGET static inline V load(const double* p) { return _mm256_loadu_pd(p); }
  FULLCONV_TARGET static inline void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  FULLCONV_TARGET static inline V masked_load(const double* p, M m) { return _mm256_maskload_pd(p, m); }
  FULLCONV_TARGET static inline void masked_store(double* p, M m, V v) { _mm256_maskstore_pd(p, m, v); }
  FULLCONV_TARGET static inline V broadcast(const double* p) { return _mm256_broadcast_sd(p); }
  FULLCONV_TARGET static inline V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  FULLCONV_TARGET static inline V add(V a, V b) { return _mm256_add_pd(a, b); }
  FULLCONV_TARGET static inline M mask(int64_t n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(std::clamp<int64_t>(n, 0, 4)),
                              _mm256_setr_epi64x(0, 1, 2, 3));
  }
  FULLCONV_TARGET static inline M mask_range(int64_t lo, int64_t hi) {
    return _mm256_andnot_si256(mask(lo), mask(hi));
  }
};
#endif

// A vector of channels that may run past the last valid one (kTail): masked, so lanes beyond
// it are neither read (they may lie past the end of the tensor) nor written.
template <typename T, bool kTail>
FULLCONV_TARGET inline typename Simd<T>::V load_channels(const T* p, typename Simd<T>::M m) {
  if constexpr (kTail) return Simd<T>::masked_load(p, m);
  else return Simd<T>::load(p);
}
template <typename T, bool kTail>
FULLCONV_TARGET inline void store_channels(T* p, typename Simd<T>::M m, typename Simd<T>::V v) {
  if constexpr (kTail) Simd<T>::masked_store(p, m, v);
  else Simd<T>::store(p, v);
}

// One run of products for a forward tile: for i < len, tile position j in [j0, j1) reads
// x[j][i * channel_step] and the packed weight row w + i*B (B output channels). Positions
// outside [j0, j1) are those where the run's tap meets only padding: they are not touched.
template <typename T>
struct Segment {
  const T* x[kMaxPositions];
  const T* w;
  int64_t len;
  int j0, j1;
};

#define FULLCONV_TARGET_INLINE FULLCONV_TARGET __attribute__((always_inline)) inline

// The products of one segment for the positions [J0, J1) of a tile of NV vectors of output
// channels x P positions.
#if FULLCONV_BLOCKED_BF16
// The bfloat16 form (In = Bf16, T = float): the run's channels in pairs, one vdpbf16ps per
// vector and position adding both products of a pair to the float32 accumulators. The packed
// weight holds each pair's two values side by side per output channel ([pair][B][2]), so a
// vector of weights is 16 output channels x 2 channels; the input is channels-last (unit
// channel step) and a pair is one 32-bit broadcast. Runs have an even length and start at an
// even channel (callers: an even number of channels per group).
FULLCONV_TARGET_INLINE __m512bh as_bf16_pairs(__m512i v) {
  __m512bh r;
  std::memcpy(&r, &v, sizeof(r));
  return r;
}

template <int NV, int P, int J0, int J1>
FULLCONV_TARGET_INLINE void run_pairs(const Segment<Bf16>& sg, int64_t x_shift, __m512 (&a)[NV][P]) {
  constexpr int kPairLanes = 32;  // bfloat16 values per vector
  const Bf16* w = sg.w;
  const Bf16* xp[P];
#pragma GCC unroll 8
  for (int j = J0; j < J1; ++j) xp[j] = sg.x[j] + x_shift;
  const int64_t pairs = sg.len / 2;
  int64_t off = 0;
  for (int64_t i = 0; i < pairs; ++i, off += 2, w += NV * kPairLanes) {
    __m512bh wv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) wv[v] = as_bf16_pairs(_mm512_loadu_si512(w + v * kPairLanes));
#pragma GCC unroll 8
    for (int j = J0; j < J1; ++j) {
      int32_t pair;
      std::memcpy(&pair, xp[j] + off, sizeof(pair));
      const __m512bh b = as_bf16_pairs(_mm512_set1_epi32(pair));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) a[v][j] = _mm512_dpbf16_ps(a[v][j], wv[v], b);
    }
  }
}
#endif

template <typename T, typename In, int NV, int P, int J0, int J1>
FULLCONV_TARGET_INLINE void run_segment(const Segment<In>& sg, int64_t xc, int64_t x_shift,
                                        typename Simd<T>::V (&a)[NV][P]) {
#if FULLCONV_BLOCKED_BF16
  if constexpr (std::is_same_v<In, Bf16>) {
    run_pairs<NV, P, J0, J1>(sg, x_shift, a);
    return;
  } else
#endif
  {
  static_assert(std::is_same_v<In, T>, "operands of the accumulators' type, or bfloat16 pairs");
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::kLanes;
  const T* w = sg.w;
  const T* xp[P];
#pragma GCC unroll 8
  for (int j = J0; j < J1; ++j) xp[j] = sg.x[j] + x_shift;
  const int64_t len = sg.len;
  int64_t off = 0;
  for (int64_t i = 0; i < len; ++i, off += xc, w += NV * L) {
    V wv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) wv[v] = S::load(w + v * L);
#pragma GCC unroll 8
    for (int j = J0; j < J1; ++j) {
      const V b = S::broadcast(xp[j] + off);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) a[v][j] = S::fma(wv[v], b, a[v][j]);
    }
  }
  }
}

// A segment covering only part of the tile (row edges): one specialisation per range [A, B),
// so the accumulators stay in registers and no product of padding is computed.
template <typename T, typename In, int NV, int P, int A, int B>
FULLCONV_TARGET_INLINE void run_range(const Segment<In>& sg, int64_t xc, int64_t x_shift,
                                      typename Simd<T>::V (&a)[NV][P]) {
  if constexpr (B <= P) {
    if (sg.j1 == B) return run_segment<T, In, NV, P, A, B>(sg, xc, x_shift, a);
    run_range<T, In, NV, P, A, B + 1>(sg, xc, x_shift, a);
  }
}
template <typename T, typename In, int NV, int P, int A = 0>
FULLCONV_TARGET_INLINE void run_partial_segment(const Segment<In>& sg, int64_t xc, int64_t x_shift,
                                                typename Simd<T>::V (&a)[NV][P]) {
  if constexpr (A < P) {
    if (sg.j0 == A) return run_range<T, In, NV, P, A, A + 1>(sg, xc, x_shift, a);
    run_partial_segment<T, In, NV, P, A + 1>(sg, xc, x_shift, a);
  }
}

// store_positions' store of channel c (its positions: the lanes of pm), unless c >= valid.
FULLCONV_TARGET_INLINE void put_positions(float* out, int64_t c, int64_t oc_step, int64_t valid, bool accumulate,
                                          __m256i pm, __m256 x) {
  if (c >= valid) return;
  float* o = out + c * oc_step;
  if (accumulate) x = _mm256_add_ps(x, _mm256_maskload_ps(o, pm));
  _mm256_maskstore_ps(o, pm, x);
}

#if FULLCONV_BLOCKED_WIDTH == 512
// (the zero-masked forms with every lane set: the unmasked intrinsics of GCC 12, casts
// included, trip -Wmaybe-uninitialized on their undefined pass-through operand)
FULLCONV_TARGET_INLINE __m256 lower_half(__m512 x) {
  return _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, _mm512_castps_pd(x), 0));
}
FULLCONV_TARGET_INLINE __m256 upper_half(__m512 x) {
  return _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, _mm512_castps_pd(x), 1));
}
#endif

// Writes a tile of float32 accumulators a[v][j] (vector v: 16 or 8 output channels, at
// position j < P) where each channel's P positions are adjacent in memory (channel c at
// out + c * oc_step, positions at +0..P-1): a register transpose of eight positions (those past
// P are zero and never written) into one 8-lane vector per channel, then one masked 8-lane
// store per channel (accumulate: added to what is there). Channels from `valid` on are not
// touched. Instead of P scalar stores per channel through a stack buffer.
template <int NV, int P>
FULLCONV_TARGET_INLINE void store_positions(const typename Simd<float>::V (&a)[NV][P], float* out, int64_t oc_step,
                                            int64_t valid, bool accumulate) {
  static_assert(P >= 1 && P <= 8, "eight positions per transpose");
  using V = typename Simd<float>::V;
  constexpr int L = Simd<float>::kLanes;
  const __m256i pm = _mm256_cmpgt_epi32(_mm256_set1_epi32(P), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    V r[8];
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) r[j] = j < P ? a[v][j < P ? j : 0] : Simd<float>::zero();
#if FULLCONV_BLOCKED_WIDTH == 512
    // (zero-masked forms with every lane set: see lower_half)
    // per 128-bit lane l (channels 4l..4l+3): t interleaves two positions, u_k holds channel
    // 4l+k at positions 0-3 (k < 4) or channel 4l+k-4 at positions 4-7 (k >= 4)
    const V t0 = _mm512_maskz_unpacklo_ps(0xFFFF, r[0], r[1]), t1 = _mm512_maskz_unpackhi_ps(0xFFFF, r[0], r[1]);
    const V t2 = _mm512_maskz_unpacklo_ps(0xFFFF, r[2], r[3]), t3 = _mm512_maskz_unpackhi_ps(0xFFFF, r[2], r[3]);
    const V t4 = _mm512_maskz_unpacklo_ps(0xFFFF, r[4], r[5]), t5 = _mm512_maskz_unpackhi_ps(0xFFFF, r[4], r[5]);
    const V t6 = _mm512_maskz_unpacklo_ps(0xFFFF, r[6], r[7]), t7 = _mm512_maskz_unpackhi_ps(0xFFFF, r[6], r[7]);
    const V u[8] = {_mm512_shuffle_ps(t0, t2, 0x44), _mm512_shuffle_ps(t0, t2, 0xEE),
                    _mm512_shuffle_ps(t1, t3, 0x44), _mm512_shuffle_ps(t1, t3, 0xEE),
                    _mm512_shuffle_ps(t4, t6, 0x44), _mm512_shuffle_ps(t4, t6, 0xEE),
                    _mm512_shuffle_ps(t5, t7, 0x44), _mm512_shuffle_ps(t5, t7, 0xEE)};
    // lanes 0 and 1 of u_k and u_{k+4} side by side: channels k and 4+k; lanes 2, 3: 8+k, 12+k
    const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    const __m512i hi = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    const int64_t c0 = int64_t(v) * L;
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      const V w01 = _mm512_permutex2var_ps(u[k], lo, u[k + 4]);
      const V w23 = _mm512_permutex2var_ps(u[k], hi, u[k + 4]);
      put_positions(out, c0 + k, oc_step, valid, accumulate, pm, lower_half(w01));
      put_positions(out, c0 + 4 + k, oc_step, valid, accumulate, pm, upper_half(w01));
      put_positions(out, c0 + 8 + k, oc_step, valid, accumulate, pm, lower_half(w23));
      put_positions(out, c0 + 12 + k, oc_step, valid, accumulate, pm, upper_half(w23));
    }
#else
    V col[8];  // channel c0 + k at positions 0-7
    transpose8x8(r, col);
    const int64_t c0 = int64_t(v) * L;
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) put_positions(out, c0 + k, oc_step, valid, accumulate, pm, col[k]);
#endif
  }
}

// B = NV vectors of output channels x P positions, accumulated over all segments, then stored
// once: vector stores when the output's channels are contiguous (oc_step == 1), otherwise
// through a small transpose (each channel's P positions written with pos_step; float32 with
// adjacent positions: store_positions).
template <typename T, typename In, int NV, int P, bool kTail>
FULLCONV_TARGET void forward_tile(const Segment<In>* seg, int64_t nseg, int64_t xc, int64_t x_shift, const T* bias,
                                bool accumulate, T* out, int64_t pos_step, int64_t oc_step, int64_t valid) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::kLanes;
  const bool vector_store = oc_step == 1;
  typename S::M m[NV];
  V b[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    m[v] = S::mask(valid - v * L);
    b[v] = bias != nullptr ? load_channels<T, kTail>(bias + v * L, m[v]) : S::zero();
  }
  V a[NV][P];
#pragma GCC unroll 8
  for (int j = 0; j < P; ++j) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      a[v][j] = accumulate && vector_store ? S::add(b[v], load_channels<T, kTail>(out + j * pos_step + v * L, m[v]))
                                           : b[v];
  }
  for (int64_t q = 0; q < nseg; ++q) {
    if (seg[q].j0 == 0 && seg[q].j1 == P) run_segment<T, In, NV, P, 0, P>(seg[q], xc, x_shift, a);
    else run_partial_segment<T, In, NV, P>(seg[q], xc, x_shift, a);
  }
  if (vector_store) {
#pragma GCC unroll 8
    for (int j = 0; j < P; ++j)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) store_channels<T, kTail>(out + j * pos_step + v * L, m[v], a[v][j]);
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (pos_step == 1) {  // e.g. NCHW output: each channel's positions adjacent
      store_positions<NV, P>(a, out, oc_step, valid, accumulate);
      return;
    }
  }
  alignas(64) T buf[P][NV * L];
#pragma GCC unroll 8
  for (int j = 0; j < P; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) S::store(buf[j] + v * L, a[v][j]);
  for (int64_t c = 0; c < valid; ++c) {
    T* o = out + c * oc_step;
    if (accumulate)
      for (int j = 0; j < P; ++j) o[j * pos_step] += buf[j][c];
    else
      for (int j = 0; j < P; ++j) o[j * pos_step] = buf[j][c];
  }
}

template <typename T, typename In, int NV, bool kTail>
FULLCONV_TARGET void forward_tile_n(int positions, const Segment<In>* seg, int64_t nseg, int64_t xc, int64_t x_shift,
                                  const T* bias, bool accumulate, T* out, int64_t pos_step,
                                  int64_t oc_step, int64_t valid) {
  switch (positions) {
#define FULLCONV_TILE_CASE(N)                                                                                 \
  case N:                                                                                                     \
    return forward_tile<T, In, NV, N, kTail>(seg, nseg, xc, x_shift, bias, accumulate, out, pos_step, oc_step, \
                                             valid);
    FULLCONV_TILE_CASE(1) FULLCONV_TILE_CASE(2) FULLCONV_TILE_CASE(3)
    FULLCONV_TILE_CASE(4) FULLCONV_TILE_CASE(5)
    default: break;
  }
  if constexpr (NV == 1) {  // the wide tiles of one vector
    switch (positions) {
      FULLCONV_TILE_CASE(7) FULLCONV_TILE_CASE(8)
      default: break;
    }
  }
#undef FULLCONV_TILE_CASE
  forward_tile<T, In, NV, 6, kTail>(seg, nseg, xc, x_shift, bias, accumulate, out, pos_step, oc_step, valid);
}

// B = NV vectors of output channels x NI input channels of one tap, summed over every sample
// and every output position where the tap reads real input (one contiguous range per dim).
// Reads the channel-blocked copies (blocked_kernels.h), so both operands stream sequentially.
template <typename T, int NV, int NI>
FULLCONV_TARGET void grad_weight_tile(const Problem& p, const T* gy_block, const T* x_block, int64_t BI,
                                    const int64_t* k, int64_t n_begin, int64_t n_end,
                                    bool accumulate, T* dst, int64_t oc_stride, int64_t ic_stride,
                                    int64_t valid) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::kLanes;
  constexpr int64_t B = NV * Simd<T>::kLanes;
  V a[NV][NI];
#pragma GCC unroll 8
  for (int j = 0; j < NI; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) a[v][j] = S::zero();
  int64_t lo[3], hi[3];
  bool empty = false;
  for (int i = 0; i < 3; ++i) {
    tap_output_range_padded(k[i], p.in_size[i], p.out_size[i], p.stride[i], p.dilation[i],
                            p.pad[i], &lo[i], &hi[i]);
    empty = empty || lo[i] > hi[i];
  }
  if (!empty) {
    const int64_t count = hi[2] - lo[2] + 1, x_step = p.stride[2] * BI;
    const int64_t i2 = lo[2] * p.stride[2] + k[2] * p.dilation[2] - p.pad[2];
    for (int64_t n = n_begin; n < n_end; ++n)
      for (int64_t o0 = lo[0]; o0 <= hi[0]; ++o0) {
        const int64_t i0 = o0 * p.stride[0] + k[0] * p.dilation[0] - p.pad[0];
        for (int64_t o1 = lo[1]; o1 <= hi[1]; ++o1) {
          const int64_t i1 = o1 * p.stride[1] + k[1] * p.dilation[1] - p.pad[1];
          const T* gp = gy_block + (((n * p.out_size[0] + o0) * p.out_size[1] + o1) * p.out_size[2] + lo[2]) * B;
          const T* xp = x_block + (((n * p.in_size[0] + i0) * p.in_size[1] + i1) * p.in_size[2] + i2) * BI;
          for (int64_t q = 0; q < count; ++q, gp += B, xp += x_step) {
            V w[NV];
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) w[v] = S::load(gp + v * L);
#pragma GCC unroll 8
            for (int j = 0; j < NI; ++j) {
              const V b = S::broadcast(xp + j);
#pragma GCC unroll 4
              for (int v = 0; v < NV; ++v) a[v][j] = S::fma(w[v], b, a[v][j]);
            }
          }
        }
      }
  }
  // B x NI products of a whole reduction: a scalar transpose into the gradient's layout
  alignas(64) T buf[NI][NV * L];
#pragma GCC unroll 8
  for (int j = 0; j < NI; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) S::store(buf[j] + v * L, a[v][j]);
  for (int64_t c = 0; c < valid; ++c) {
    T* o = dst + c * oc_stride;
    if (accumulate)
      for (int j = 0; j < NI; ++j) o[j * ic_stride] += buf[j][c];
    else
      for (int j = 0; j < NI; ++j) o[j * ic_stride] = buf[j][c];
  }
}

// MaxNI: the largest input-channel block of the caller (BI <= MaxNI).
template <typename T, int NV, int MaxNI>
FULLCONV_TARGET void grad_weight_tile_n(int channels, const Problem& p, const T* gy_block,
                                      const T* x_block, int64_t BI, const int64_t* k, int64_t n_begin,
                                      int64_t n_end, bool accumulate, T* dst, int64_t oc_stride,
                                      int64_t ic_stride, int64_t valid) {
  static_assert(MaxNI >= 1 && MaxNI <= 12, "tile dispatch covers 1..12 input channels");
  switch (channels) {
#define FULLCONV_GW_CASE(N)                                                                              \
  case N:                                                                                                \
    if constexpr ((N) <= MaxNI)                                                                          \
      return grad_weight_tile<T, NV, (N)>(p, gy_block, x_block, BI, k, n_begin, n_end, accumulate, dst,   \
                                          oc_stride, ic_stride, valid);                                   \
    return;
    FULLCONV_GW_CASE(1) FULLCONV_GW_CASE(2) FULLCONV_GW_CASE(3) FULLCONV_GW_CASE(4) FULLCONV_GW_CASE(5)
    FULLCONV_GW_CASE(6) FULLCONV_GW_CASE(7) FULLCONV_GW_CASE(8) FULLCONV_GW_CASE(9) FULLCONV_GW_CASE(10)
    FULLCONV_GW_CASE(11) FULLCONV_GW_CASE(12)
#undef FULLCONV_GW_CASE
    default:
      throw std::logic_error("grad_weight tile: more input channels than its block");
  }
}


// ---- rows: vectors along the positions of an output row (few output channels) ------------

// NC output channels x NV vectors of consecutive output positions of one row, starting at
// position ow0, accumulated over every (tap, input channel): each product is a broadcast
// weight times a vector of inputs (the inputs of consecutive positions are consecutive at
// unit stride). At row edges the lanes whose input lies in the padding are masked off (not
// read; they add nothing). Stored once, masked to the row.
template <typename T, int NC, int NV, bool kMasked>
FULLCONV_TARGET_INLINE void rows_products(const T* x, int64_t isc, const T* w, int64_t cin,
                                          const typename Simd<T>::M* m, typename Simd<T>::V (&a)[NC][NV]) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::kLanes;
  for (int64_t ci = 0; ci < cin; ++ci, x += isc, w += kRowsBlock) {
    V wb[NC];
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) wb[c] = S::broadcast(w + c);
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      V xv;
      if constexpr (kMasked) xv = S::masked_load(x + v * L, m[v]);
      else xv = S::load(x + v * L);
#pragma GCC unroll 8
      for (int c = 0; c < NC; ++c) a[c][v] = S::fma(wb[c], xv, a[c][v]);
    }
  }
}

template <typename T, int NC, int NV>
FULLCONV_TARGET void rows_tile(const Problem& p, const T* in_n, const T* w_block, const T* bias, bool accumulate,
                               T* out_row, int64_t o0, int64_t o1, int64_t ow0) {
  using S = Simd<T>;
  using V = typename S::V;
  using M = typename S::M;
  constexpr int L = S::kLanes;
  const int64_t cin_g = p.in_channels_per_group();
  const int64_t K1 = p.kernel[1], K2 = p.kernel[2];
  const int64_t I2 = p.in_size[2], O2 = p.out_size[2];
  V a[NC][NV];
#pragma GCC unroll 8
  for (int c = 0; c < NC; ++c) {
    const V init = bias != nullptr ? S::broadcast(bias + c) : S::zero();
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) a[c][v] = init;
  }
  int64_t k0_lo, k0_hi, k1_lo, k1_hi;
  tap_range_padded(o0, p.in_size[0], p.kernel[0], p.stride[0], p.dilation[0], p.pad[0], &k0_lo, &k0_hi);
  tap_range_padded(o1, p.in_size[1], K1, p.stride[1], p.dilation[1], p.pad[1], &k1_lo, &k1_hi);
  for (int64_t k0 = k0_lo; k0 <= k0_hi; ++k0) {
    const int64_t i0 = o0 * p.stride[0] + k0 * p.dilation[0] - p.pad[0];
    for (int64_t k1 = k1_lo; k1 <= k1_hi; ++k1) {
      const int64_t i1 = o1 * p.stride[1] + k1 * p.dilation[1] - p.pad[1];
      const T* x_row = in_n + i0 * p.in_stride[0] + i1 * p.in_stride[1];
      for (int64_t k2 = 0; k2 < K2; ++k2) {
        // input index of the tile's first position (unit stride along the row)
        const int64_t base = ow0 + k2 * p.dilation[2] - p.pad[2];
        if (base + NV * L <= 0 || base >= I2) continue;  // only padding under the tile
        const T* w = w_block + ((k0 * K1 + k1) * K2 + k2) * cin_g * kRowsBlock;
        M m[NV];
        bool full = true;
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          const int64_t lo = std::max<int64_t>(0, -(base + v * L));       // first real lane
          const int64_t hi = std::min<int64_t>(L, I2 - (base + v * L));   // past the last real lane
          m[v] = S::mask_range(lo, hi);
          full = full && lo == 0 && hi == L;
        }
        if (full) rows_products<T, NC, NV, false>(x_row + base, p.in_stride_c, w, cin_g, m, a);
        else rows_products<T, NC, NV, true>(x_row + base, p.in_stride_c, w, cin_g, m, a);
      }
    }
  }
  const int64_t osc = p.out_stride_c, os2 = p.out_stride[2];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const int64_t n_valid = std::min<int64_t>(L, O2 - (ow0 + v * L));
    if (n_valid <= 0) break;
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) {
      T* o = out_row + c * osc + (ow0 + v * L) * os2;
      if (os2 == 1) {
        const M mv = S::mask(n_valid);
        V r = a[c][v];
        if (accumulate) r = S::add(r, S::masked_load(o, mv));
        S::masked_store(o, mv, r);
      } else {
        alignas(64) T buf[L];
        S::store(buf, a[c][v]);
        if (accumulate)
          for (int64_t j = 0; j < n_valid; ++j) o[j * os2] += buf[j];
        else
          for (int64_t j = 0; j < n_valid; ++j) o[j * os2] = buf[j];
      }
    }
  }
}

// Vectors per tile for NC channels: about 12 accumulators (fewer vectors on short rows).
template <int NC>
constexpr int rows_max_vectors() {
  return NC == 1 ? 8 : NC == 2 ? 6 : NC == 3 ? 4 : 3;
}

template <typename T, int NC>
FULLCONV_TARGET void rows_tile_nv(int nv, const Problem& p, const T* in_n, const T* w_block, const T* bias,
                                  bool accumulate, T* out_row, int64_t o0, int64_t o1, int64_t ow0) {
  static_assert(rows_max_vectors<NC>() <= 8, "cases below");
  switch (nv) {
#define FULLCONV_NV_CASE(N)                                                                    \
  case N:                                                                                      \
    if constexpr (N <= rows_max_vectors<NC>())                                                 \
      return rows_tile<T, NC, N>(p, in_n, w_block, bias, accumulate, out_row, o0, o1, ow0);    \
    break;
    FULLCONV_NV_CASE(1) FULLCONV_NV_CASE(2) FULLCONV_NV_CASE(3) FULLCONV_NV_CASE(4)
    FULLCONV_NV_CASE(5) FULLCONV_NV_CASE(6) FULLCONV_NV_CASE(7) FULLCONV_NV_CASE(8)
#undef FULLCONV_NV_CASE
    default: break;
  }
}


// ---- depthwise: one input channel per group --------------------------------------------

// The planes (output channels) a depthwise_row call computes together: CB consecutive output
// channels of one sample and out S0 index, each with its own input channel, weights and bias.
// Their planes share every offset, mask and tap range: only the base pointers differ.
template <typename T, int CB>
struct DepthwisePlanes {
  const T* in[CB];   // the output channel's input channel (sample n)
  const T* w[CB];    // its packed taps [K0, K1, K2]
  T bias[CB];
  T* out[CB];        // its output plane at (n, o0)
};

// NV vectors of consecutive output positions of R rows (o1, o1 + 1, ...) of CB planes:
// every product a broadcast weight times a vector of inputs. Rows and planes multiply the
// independent sums (short rows have only 1-3 vectors: one row's sums alone wait on the
// multiply-add latency) and share the loop's offsets, masks and branches, which are most of
// the instructions where a row holds few positions (a 7x7 map: 9 positions, one vector).
// `m` and `full`: per tap along the row, the lanes whose input is real (computed once per task).
template <typename T, int NV, int R, int CB>
FULLCONV_TARGET void depthwise_row(const Problem& p, const DepthwisePlanes<T, CB>& pl, bool accumulate,
                                   int64_t o0, int64_t o1, int64_t ow0,
                                   const typename Simd<T>::M* m, const bool* full, const bool* any) {
  using S = Simd<T>;
  using V = typename S::V;
  using M = typename S::M;
  constexpr int L = S::kLanes;
  const int64_t K1 = p.kernel[1], K2 = p.kernel[2];
  V a[CB][R][NV];
#pragma GCC unroll 12
  for (int c = 0; c < CB; ++c)
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) a[c][r][v] = S::broadcast(&pl.bias[c]);
  int64_t k0_lo, k0_hi, k1_lo[R], k1_hi[R];
  tap_range_padded(o0, p.in_size[0], p.kernel[0], p.stride[0], p.dilation[0], p.pad[0], &k0_lo, &k0_hi);
  int64_t k1_min = K1, k1_max = -1;
  for (int r = 0; r < R; ++r) {
    tap_range_padded(o1 + r, p.in_size[1], K1, p.stride[1], p.dilation[1], p.pad[1], &k1_lo[r], &k1_hi[r]);
    if (k1_lo[r] <= k1_hi[r]) {
      k1_min = std::min(k1_min, k1_lo[r]);
      k1_max = std::max(k1_max, k1_hi[r]);
    }
  }
  for (int64_t k0 = k0_lo; k0 <= k0_hi; ++k0) {
    const int64_t i0 = o0 * p.stride[0] + k0 * p.dilation[0] - p.pad[0];
    for (int64_t k1 = k1_min; k1 <= k1_max; ++k1) {
      int64_t x_off[R];  // element offset of the row's first load (any plane)
      bool on[R];
      bool all_on = true;
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) {
        on[r] = k1 >= k1_lo[r] && k1 <= k1_hi[r];
        all_on = all_on && on[r];
        const int64_t i1 = (o1 + r) * p.stride[1] + k1 * p.dilation[1] - p.pad[1];
        x_off[r] = on[r] ? i0 * p.in_stride[0] + i1 * p.in_stride[1] + ow0 - p.pad[2] : 0;
      }
      const int64_t wk = (k0 * K1 + k1) * K2;
      for (int64_t k2 = 0; k2 < K2; ++k2) {
        if (!any[k2]) continue;
        const int64_t shift = k2 * p.dilation[2];
        if (all_on && full[k2]) {  // every row reads this kernel row, no lane at a row edge
#pragma GCC unroll 12
          for (int c = 0; c < CB; ++c) {
            const V wv = S::broadcast(pl.w[c] + wk + k2);
            const T* x = pl.in[c] + shift;
#pragma GCC unroll 2
            for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
              for (int v = 0; v < NV; ++v) a[c][r][v] = S::fma(wv, S::load(x + x_off[r] + v * L), a[c][r][v]);
          }
        } else if (all_on) {  // loads at the row edges masked
#pragma GCC unroll 12
          for (int c = 0; c < CB; ++c) {
            const V wv = S::broadcast(pl.w[c] + wk + k2);
            const T* x = pl.in[c] + shift;
#pragma GCC unroll 2
            for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
              for (int v = 0; v < NV; ++v)
                a[c][r][v] = S::fma(wv, S::masked_load(x + x_off[r] + v * L, m[k2 * NV + v]), a[c][r][v]);
          }
        } else {  // at the plane's top or bottom edge: only some rows read it
#pragma GCC unroll 12
          for (int c = 0; c < CB; ++c) {
            const V wv = S::broadcast(pl.w[c] + wk + k2);
            const T* x = pl.in[c] + shift;
#pragma GCC unroll 2
            for (int r = 0; r < R; ++r) {
              if (!on[r]) continue;
#pragma GCC unroll 8
              for (int v = 0; v < NV; ++v)
                a[c][r][v] = S::fma(wv, S::masked_load(x + x_off[r] + v * L, m[k2 * NV + v]), a[c][r][v]);
            }
          }
        }
      }
    }
  }
  const int64_t os2 = p.out_stride[2], O2 = p.out_size[2];
#pragma GCC unroll 12
  for (int c = 0; c < CB; ++c)
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        const int64_t n_valid = std::min<int64_t>(L, O2 - (ow0 + v * L));
        if (n_valid <= 0) break;
        T* o = pl.out[c] + (o1 + r) * p.out_stride[1] + (ow0 + v * L) * os2;
        if (os2 == 1) {
          const M mv = S::mask(n_valid);
          V x = a[c][r][v];
          if (accumulate) x = S::add(x, S::masked_load(o, mv));
          S::masked_store(o, mv, x);
        } else {
          alignas(64) T buf[L];
          S::store(buf, a[c][r][v]);
          for (int64_t j = 0; j < n_valid; ++j) o[j * os2] = (accumulate ? o[j * os2] : T(0)) + buf[j];
        }
      }
}

constexpr int kDepthwiseMaxVectors = 4;
// Independent sums a depthwise_row call holds at most (planes x rows x vectors): enough to
// cover the multiply-add latency, within the register file (32 vector registers on AVX-512,
// 16 on AVX2, which also holds the weight broadcast, a load and its mask).
constexpr int kDepthwiseSums = FULLCONV_BLOCKED_WIDTH == 512 ? kDepthwiseSums512 : kDepthwiseSums256;

// All rows of the planes of `pl` (the row tiles' masks `m`, `full`, `any` computed once by the
// caller), R rows at a time (a last odd row alone).
template <typename T, int NV, int R, int CB>
FULLCONV_TARGET void depthwise_planes(const Problem& p, const DepthwisePlanes<T, CB>& pl, bool accumulate,
                                      int64_t o0, int64_t ow0, const typename Simd<T>::M* m, const bool* full,
                                      const bool* any) {
  int64_t o1 = 0;
  if constexpr (R == 2)
    for (; o1 + 2 <= p.out_size[1]; o1 += 2) depthwise_row<T, NV, 2, CB>(p, pl, accumulate, o0, o1, ow0, m, full, any);
  for (; o1 < p.out_size[1]; ++o1) depthwise_row<T, NV, 1, CB>(p, pl, accumulate, o0, o1, ow0, m, full, any);
}

// Output channels oc0 .. oc0 + nc - 1 of (n, o0), row tiles of NV vectors from ow0 on, in
// calls of as many planes as kDepthwiseSums allows for NV vectors and R rows.
template <typename T, int NV, int R>
FULLCONV_TARGET void depthwise_channels(const Problem& p, const T* in, const T* w_packed, const T* bias,
                                        bool accumulate, T* out, int64_t n, int64_t o0, int64_t oc0, int64_t nc,
                                        int64_t ow0, const typename Simd<T>::M* m, const bool* full,
                                        const bool* any) {
  // (a task holds at most kDepthwiseSums / 2 channels: depthwise_channel_block)
  constexpr int kMaxCB = std::min(kDepthwiseSums / 2, std::max(1, kDepthwiseSums / (R * NV)));
  const int64_t cout_g = p.out_channels_per_group(), ktot = p.kernel_volume();
  for (int64_t c0 = 0; c0 < nc;) {
    const int64_t cb = std::min<int64_t>(kMaxCB, nc - c0);
    auto run = [&](auto cb_const) {
      constexpr int CB = decltype(cb_const)::value;
      DepthwisePlanes<T, CB> pl;
      for (int c = 0; c < CB; ++c) {
        const int64_t oc = oc0 + c0 + c;
        pl.in[c] = in + n * p.in_stride_n + (oc / cout_g) * p.in_stride_c;
        pl.w[c] = w_packed + oc * ktot;
        pl.bias[c] = bias != nullptr ? bias[oc] : T(0);
        pl.out[c] = out + n * p.out_stride_n + oc * p.out_stride_c + o0 * p.out_stride[0];
      }
      depthwise_planes<T, NV, R, CB>(p, pl, accumulate, o0, ow0, m, full, any);
    };
    static_assert(kMaxCB <= 6, "cases below");
    switch (cb) {
      case 1: run(std::integral_constant<int, 1>{}); break;
      case 2: if constexpr (kMaxCB >= 2) run(std::integral_constant<int, 2>{}); break;
      case 3: if constexpr (kMaxCB >= 3) run(std::integral_constant<int, 3>{}); break;
      case 4: if constexpr (kMaxCB >= 4) run(std::integral_constant<int, 4>{}); break;
      case 5: if constexpr (kMaxCB >= 5) run(std::integral_constant<int, 5>{}); break;
      default: if constexpr (kMaxCB >= 6) run(std::integral_constant<int, 6>{}); break;
    }
    c0 += cb;
  }
}

// The masks of row tiles of NV vectors at ow0 (per tap along the row: the lanes whose input is
// real, whether all are, whether any is) into the caller's buffers; returns the masks.
template <typename T, int NV>
FULLCONV_TARGET typename Simd<T>::M* depthwise_masks(const Problem& p, int64_t ow0, std::vector<char>& mask_buf,
                                                     std::vector<char>& full, std::vector<char>& any) {
  using M = typename Simd<T>::M;
  constexpr int L = Simd<T>::kLanes;
  const int64_t K2 = p.kernel[2], I2 = p.in_size[2];
  // masks in a byte buffer aligned by hand (std::vector of vector types is not aligned for them)
  mask_buf.resize(static_cast<size_t>(K2 * NV) * sizeof(M) + 64);
  M* m = reinterpret_cast<M*>((reinterpret_cast<uintptr_t>(mask_buf.data()) + 63) & ~uintptr_t(63));
  full.resize(static_cast<size_t>(K2));
  any.resize(static_cast<size_t>(K2));
  for (int64_t k2 = 0; k2 < K2; ++k2) {
    const int64_t base = ow0 + k2 * p.dilation[2] - p.pad[2];
    bool f = true, a = false;
    for (int v = 0; v < NV; ++v) {
      const int64_t lo = std::max<int64_t>(0, -(base + v * L));
      const int64_t hi = std::min<int64_t>(L, I2 - (base + v * L));
      m[k2 * NV + v] = Simd<T>::mask_range(lo, hi);
      f = f && lo == 0 && hi == L;
      a = a || lo < hi;
    }
    full[k2] = f;
    any[k2] = a;
  }
  return m;
}

// One task's row tiles of NV vectors at ow0: its channels R rows at a time.
template <typename T, int NV>
FULLCONV_TARGET void depthwise_tile(const Problem& p, const T* in, const T* w_packed, const T* bias,
                                    bool accumulate, T* out, int64_t n, int64_t o0, int64_t oc0, int64_t nc,
                                    int64_t ow0, std::vector<char>& mask_buf, std::vector<char>& full,
                                    std::vector<char>& any) {
  const auto* m = depthwise_masks<T, NV>(p, ow0, mask_buf, full, any);
  static_assert(sizeof(bool) == sizeof(char), "flags passed as bool");
  const auto* fl = reinterpret_cast<const bool*>(full.data());
  const auto* an = reinterpret_cast<const bool*>(any.data());
  if (p.depthwise_rows == 2)
    depthwise_channels<T, NV, 2>(p, in, w_packed, bias, accumulate, out, n, o0, oc0, nc, ow0, m, fl, an);
  else
    depthwise_channels<T, NV, 1>(p, in, w_packed, bias, accumulate, out, n, o0, oc0, nc, ow0, m, fl, an);
}

}  // namespace

namespace {

// forward() with tiles of NV vectors of output channels (B = NV * lanes, the packed weight's block).
// In: the operands' type, T (float32/float64) or Bf16 (pairs of channels; T = float).
template <typename T, typename In, int NV>
FULLCONV_TARGET void forward_blocks(const Problem& p, const In* in, const In* w_packed, const T* bias,
                                    bool accumulate, T* out, int64_t task_begin, int64_t task_end) {
  constexpr int64_t B = NV * Simd<T>::kLanes;
  const int64_t cin_g = p.in_channels_per_group(), cout_g = p.out_channels_per_group();
  const int64_t OCB = ceil_div(cout_g, B), ktot = p.kernel_volume();
  const int64_t K1 = p.kernel[1], K2 = p.kernel[2];
  const int64_t O0 = p.out_size[0], O1 = p.out_size[1], O2 = p.out_size[2];
  const int64_t I2 = p.in_size[2];
  const int64_t s2 = p.stride[2], d2 = p.dilation[2], pad2 = p.pad[2];
  const int64_t isn = p.in_stride_n, isc = p.in_stride_c, is0 = p.in_stride[0], is1 = p.in_stride[1],
                is2 = p.in_stride[2];
  const int64_t osn = p.out_stride_n, osc = p.out_stride_c, os0 = p.out_stride[0], os1 = p.out_stride[1],
                os2 = p.out_stride[2];
  // (tap k2, input channel) pairs are evenly spaced in `in` and contiguous in the packed
  // weight: one run per kernel row at tiles where every tap reads real input
  const int64_t isg = p.in_stride_g >= 0 ? p.in_stride_g : cin_g * isc;
  const bool merge_taps = d2 == 1 && isc == 1 && is2 == cin_g;
  // positions per tile: up to kWidePositions with one vector of output channels
  const int64_t PT = NV == 1 ? std::clamp<int64_t>(p.one_vector_positions, 1, kMaxPositions) : kTilePositions;
  // positions along dim 2 at which every tap reads real input
  const int64_t inner_lo = std::max<int64_t>(0, ceil_div(pad2, s2));
  const int64_t inner_hi = std::min<int64_t>(O2 - 1, floor_div(I2 - 1 - (K2 - 1) * d2 + pad2, s2));
  std::vector<Segment<In>> seg(static_cast<size_t>(ktot)), inner_seg(static_cast<size_t>(ktot));

  for (int64_t task = task_begin; task < task_end; ++task) {
    int64_t t = task, o1, o0, n, ocb, g;
    if (p.groups_inner) {  // (n, o0, o1, g, ocb)
      ocb = t % OCB;
      t /= OCB;
      g = t % p.groups;
      t /= p.groups;
      o1 = t % O1;
      t /= O1;
      o0 = t % O0;
      n = t / O0;
    } else {  // (g, ocb, n, o0, o1)
      o1 = t % O1;
      t /= O1;
      o0 = t % O0;
      t /= O0;
      n = t % p.batch;
      t /= p.batch;
      ocb = t % OCB;
      g = t / OCB;
    }
    int64_t k0_lo, k0_hi, k1_lo, k1_hi;
    tap_range_padded(o0, p.in_size[0], p.kernel[0], p.stride[0], p.dilation[0], p.pad[0], &k0_lo, &k0_hi);
    tap_range_padded(o1, p.in_size[1], K1, p.stride[1], p.dilation[1], p.pad[1], &k1_lo, &k1_hi);
    const int64_t valid = std::min(B, cout_g - ocb * B);
    const In* w_block = w_packed + (g * OCB + ocb) * ktot * cin_g * B;
    const T* b_block = bias != nullptr ? bias + g * cout_g + ocb * B : nullptr;
    T* out_row = out + n * osn + o0 * os0 + o1 * os1 + (g * cout_g + ocb * B) * osc;

    // The segments of the tile at ow0 with P positions (inner: every tap reads real input).
    auto build = [&](Segment<In>* segs, int64_t ow0, int P, bool inner) {
      int64_t nseg = 0;
      for (int64_t k0 = k0_lo; k0 <= k0_hi; ++k0) {
        const int64_t i0 = o0 * p.stride[0] + k0 * p.dilation[0] - p.pad[0];
        for (int64_t k1 = k1_lo; k1 <= k1_hi; ++k1) {
          const int64_t i1 = o1 * p.stride[1] + k1 * p.dilation[1] - p.pad[1];
          const In* x_row = in + n * isn + i0 * is0 + i1 * is1 + g * isg;
          const In* w_row = w_block + (k0 * K1 + k1) * K2 * cin_g * B;
          if (inner && merge_taps) {
            Segment<In>& sg = segs[nseg++];
            for (int j = 0; j < P; ++j) sg.x[j] = x_row + ((ow0 + j) * s2 - pad2) * is2;
            sg.w = w_row;
            sg.len = K2 * cin_g;
            sg.j0 = 0;
            sg.j1 = P;
            continue;
          }
          Segment<In>* last = nullptr;  // the segment of tap k2 - 1 of this kernel row, if any
          for (int64_t k2 = 0; k2 < K2; ++k2) {
            // tile positions j whose input index (ow0 + j)*s2 + k2*d2 - pad2 lies in [0, I2)
            const int64_t shift = k2 * d2 - pad2;
            const int64_t j0 = std::max<int64_t>(0, ceil_div(-shift, s2) - ow0);
            const int64_t j1 = std::min<int64_t>(P, floor_div(I2 - 1 - shift, s2) - ow0 + 1);
            if (j0 >= j1) {  // the tap meets only padding at every position of the tile
              last = nullptr;
              continue;
            }
            // with merge_taps, tap k2's run continues tap k2 - 1's in the input and the packed
            // weight: the same positions make it one segment (at a stride, pairs of taps share them)
            if (merge_taps && last != nullptr && last->j0 == j0 && last->j1 == j1) {
              last->len += cin_g;
              continue;
            }
            Segment<In>& sg = segs[nseg++];
            last = &sg;
            for (int64_t j = j0; j < j1; ++j) sg.x[j] = x_row + ((ow0 + j) * s2 + shift) * is2;
            sg.w = w_row + k2 * cin_g * B;
            sg.len = cin_g;
            sg.j0 = static_cast<int>(j0);
            sg.j1 = static_cast<int>(j1);
          }
        }
      }
      return nseg;
    };
    // Full inner tiles differ only by where along the row they read: their segments are built
    // once per row (at ow0 = inner_ref) and each such tile reads them shifted by
    // (ow0 - inner_ref) * s2 positions.
    int64_t inner_nseg = -1, inner_ref = 0;
    for (int64_t ow0 = 0; ow0 < O2; ow0 += PT) {
      const int P = static_cast<int>(std::min<int64_t>(PT, O2 - ow0));
      const bool inner = ow0 >= inner_lo && ow0 + P - 1 <= inner_hi;
      const Segment<In>* segs = seg.data();
      int64_t nseg, x_shift = 0;
      if (inner && P == PT) {
        if (inner_nseg < 0) {
          inner_nseg = build(inner_seg.data(), ow0, P, true);
          inner_ref = ow0;
        }
        segs = inner_seg.data();
        nseg = inner_nseg;
        x_shift = (ow0 - inner_ref) * s2 * is2;
      } else {
        nseg = build(seg.data(), ow0, P, inner);
      }
      T* tile_out = out_row + ow0 * os2;
      if (valid == B)
        forward_tile_n<T, In, NV, false>(P, segs, nseg, isc, x_shift, b_block, accumulate, tile_out, os2, osc, valid);
      else
        forward_tile_n<T, In, NV, true>(P, segs, nseg, isc, x_shift, b_block, accumulate, tile_out, os2, osc, valid);
    }
  }
}

// ---- depthwise, channels last: vectors across channels ---------------------------------

// One output channel per input channel (groups == channels), input with unit channel stride:
// out[n, o, c] = bias[c] + sum_k w[k, c] * x[n, o*s + k*d - pad, c]. Vectors run across
// channels (each load a whole vector of real values, no row-edge masks; aligned where the
// channel count is a multiple of the vector), the weight packed [K0, K1, K2, C] so a tap's
// weights are one load per vector. A tile is P positions along the row x NVC vectors of
// channels (P * NVC = kDepthwiseSums independent sums); each product reads one input
// vector. Masked: the last vectors of a channel count that is not a multiple of the vector
// (masks `cm`). Positions at the row's ends skip their taps in the padding one by one.
// One output row (n, o0, o1) of depthwise_cl_forward: its sample's input, its output, the taps
// of the two outer dims whose input is real, and the input index of tap 0 there.
template <typename T>
struct DepthwiseClRow {
  const T* x_n;
  T* out;
  int64_t k0_lo, k0_hi, k1_lo, k1_hi, i0_base, i1_base;
};

template <typename T, int NVC, int P, bool Masked>
FULLCONV_TARGET void depthwise_cl_tile(const Problem& p, const DepthwiseClRow<T>& row, const T* w, const T* bias,
                                       bool accumulate, int64_t c0, const typename Simd<T>::M* cm, int64_t ow0,
                                       int np) {
  using S = Simd<T>;
  using V = typename S::V;
  constexpr int L = S::kLanes;
  const int64_t C = p.out_channels, K1 = p.kernel[1], K2 = p.kernel[2];
  const int64_t s2 = p.stride[2], d2 = p.dilation[2], I2 = p.in_size[2], is2 = p.in_stride[2];
  V a[P][NVC];
#pragma GCC unroll 8
  for (int v = 0; v < NVC; ++v) {
    const V b = bias == nullptr ? S::zero() : Masked ? S::masked_load(bias + c0 + v * L, cm[v]) : S::load(bias + c0 + v * L);
#pragma GCC unroll 12
    for (int q = 0; q < P; ++q) a[q][v] = b;
  }
  const int64_t first = ow0 * s2 - p.pad[2];
  const bool interior = np == P && first >= 0 && first + (P - 1) * s2 + (K2 - 1) * d2 < I2;
  for (int64_t k0 = row.k0_lo; k0 <= row.k0_hi; ++k0) {
    for (int64_t k1 = row.k1_lo; k1 <= row.k1_hi; ++k1) {
      const T* xr = row.x_n + (row.i0_base + k0 * p.dilation[0]) * p.in_stride[0] +
                    (row.i1_base + k1 * p.dilation[1]) * p.in_stride[1] + c0;
      const T* wr = w + (k0 * K1 + k1) * K2 * C + c0;
      for (int64_t k2 = 0; k2 < K2; ++k2) {
        V wv[NVC];
#pragma GCC unroll 8
        for (int v = 0; v < NVC; ++v) wv[v] = Masked ? S::masked_load(wr + k2 * C + v * L, cm[v]) : S::load(wr + k2 * C + v * L);
        const int64_t base = first + k2 * d2;
        if (interior) {
#pragma GCC unroll 12
          for (int q = 0; q < P; ++q) {
            const T* xp = xr + (base + q * s2) * is2;
#pragma GCC unroll 8
            for (int v = 0; v < NVC; ++v)
              a[q][v] = S::fma(wv[v], Masked ? S::masked_load(xp + v * L, cm[v]) : S::load(xp + v * L), a[q][v]);
          }
        } else {
#pragma GCC unroll 12
          for (int q = 0; q < P; ++q) {
            const int64_t iw = base + q * s2;
            if (q >= np || iw < 0 || iw >= I2) continue;
            const T* xp = xr + iw * is2;
#pragma GCC unroll 8
            for (int v = 0; v < NVC; ++v)
              a[q][v] = S::fma(wv[v], Masked ? S::masked_load(xp + v * L, cm[v]) : S::load(xp + v * L), a[q][v]);
          }
        }
      }
    }
  }
  const int64_t os2 = p.out_stride[2], osc = p.out_stride_c;
#pragma GCC unroll 12
  for (int q = 0; q < P; ++q) {
    if (q >= np) break;
    T* o = row.out + (ow0 + q) * os2 + c0 * osc;
#pragma GCC unroll 8
    for (int v = 0; v < NVC; ++v) {
      if (osc == 1) {
        V r = a[q][v];
        if (Masked) {
          if (accumulate) r = S::add(r, S::masked_load(o + v * L, cm[v]));
          S::masked_store(o + v * L, cm[v], r);
        } else {
          if (accumulate) r = S::add(r, S::load(o + v * L));
          S::store(o + v * L, r);
        }
      } else {  // an output not channels-last (grad_input of an NCHW input from a channels-last grad_output; unbatched)
        alignas(64) T buf[L];
        S::store(buf, a[q][v]);
        const int64_t n_valid = std::min<int64_t>(L, C - c0 - v * L);
        for (int64_t j = 0; j < n_valid; ++j) {
          T* oj = o + (v * L + j) * osc;
          *oj = (accumulate ? *oj : T(0)) + buf[j];
        }
      }
    }
  }
}

// A tile of np <= P positions as a tile of exactly np positions, compiled for it (the last tile
// of a row: no per-position test of np, and the branch-free path where it reads no padding).
template <typename T, int NVC, int P, bool Masked, int N = 1>
FULLCONV_TARGET_INLINE void depthwise_cl_tile_n(const Problem& p, const DepthwiseClRow<T>& row, const T* w,
                                                const T* bias, bool accumulate, int64_t c0,
                                                const typename Simd<T>::M* cm, int64_t ow0, int np) {
  if constexpr (N <= P) {
    if (np == N) return depthwise_cl_tile<T, NVC, N, Masked>(p, row, w, bias, accumulate, c0, cm, ow0, N);
    depthwise_cl_tile_n<T, NVC, P, Masked, N + 1>(p, row, w, bias, accumulate, c0, cm, ow0, np);
  }
}

// The tiles of a whole output row for the channels c0 .. c0 + NVC vectors (P positions a tile;
// the last one as wide as its positions unless !p.depthwise_cl_exact_tiles).
template <typename T, int NVC, int P, bool Masked>
FULLCONV_TARGET void depthwise_cl_chunk(const Problem& p, const DepthwiseClRow<T>& row, const T* w, const T* bias,
                                        bool accumulate, int64_t c0, const typename Simd<T>::M* cm) {
  const int64_t O2 = p.out_size[2];
  for (int64_t ow0 = 0; ow0 < O2; ow0 += P) {
    const int np = static_cast<int>(std::min<int64_t>(P, O2 - ow0));
    if (p.depthwise_cl_exact_tiles) depthwise_cl_tile_n<T, NVC, P, Masked>(p, row, w, bias, accumulate, c0, cm, ow0, np);
    else depthwise_cl_tile<T, NVC, P, Masked>(p, row, w, bias, accumulate, c0, cm, ow0, np);
  }
}

// depthwise_forward where p.depthwise_channels_last: tasks are output rows (n, o0, o1), each
// all channels: chunks of two vectors (P = kDepthwiseSums / 2 positions a tile), the last
// partial chunk masked (one vector: twice the positions).
template <typename T>
FULLCONV_TARGET void depthwise_cl_forward(const Problem& p, const T* in, const T* w_cl, const T* bias,
                                          bool accumulate, T* out, int64_t task_begin, int64_t task_end) {
  using S = Simd<T>;
  using M = typename S::M;
  constexpr int L = S::kLanes;
  constexpr int P2 = kDepthwiseSums / 2, P1 = kDepthwiseSums;
  const int64_t C = p.out_channels, O0 = p.out_size[0], O1 = p.out_size[1];
  const int64_t c_whole = C / (2 * L) * (2 * L), rem = C - c_whole;
  alignas(64) M cm[2] = {S::mask(rem), S::mask(rem - L)};
  for (int64_t task = task_begin; task < task_end; ++task) {  // (n, o0, o1)
    int64_t t = task;
    const int64_t o1 = t % O1;
    t /= O1;
    const int64_t o0 = t % O0, n = t / O0;
    DepthwiseClRow<T> row;
    row.x_n = in + n * p.in_stride_n;
    row.out = out + n * p.out_stride_n + o0 * p.out_stride[0] + o1 * p.out_stride[1];
    tap_range_padded(o0, p.in_size[0], p.kernel[0], p.stride[0], p.dilation[0], p.pad[0], &row.k0_lo, &row.k0_hi);
    tap_range_padded(o1, p.in_size[1], p.kernel[1], p.stride[1], p.dilation[1], p.pad[1], &row.k1_lo, &row.k1_hi);
    row.i0_base = o0 * p.stride[0] - p.pad[0];
    row.i1_base = o1 * p.stride[1] - p.pad[1];
    for (int64_t c0 = 0; c0 < c_whole; c0 += 2 * L)
      depthwise_cl_chunk<T, 2, P2, false>(p, row, w_cl, bias, accumulate, c0, cm);
    if (rem > L) depthwise_cl_chunk<T, 2, P2, true>(p, row, w_cl, bias, accumulate, c_whole, cm);
    else if (rem == L) depthwise_cl_chunk<T, 1, P1, false>(p, row, w_cl, bias, accumulate, c_whole, cm);
    else if (rem > 0) depthwise_cl_chunk<T, 1, P1, true>(p, row, w_cl, bias, accumulate, c_whole, cm);
  }
}

}  // namespace

template <typename T>
FULLCONV_TARGET void forward(const Problem& p, const T* in, const T* w_packed, const T* bias,
                           bool accumulate, T* out, int64_t task_begin, int64_t task_end, int64_t block) {
  constexpr int64_t L = Simd<T>::kLanes;
#if FULLCONV_BLOCKED_WIDTH == 512
  if (block == 4 * L) return forward_blocks<T, T, 4>(p, in, w_packed, bias, accumulate, out, task_begin, task_end);
#endif
  if (block == L) return forward_blocks<T, T, 1>(p, in, w_packed, bias, accumulate, out, task_begin, task_end);
  if (block != 2 * L) throw std::logic_error("blocked forward: a weight packed in blocks this build has no tile for");
  forward_blocks<T, T, 2>(p, in, w_packed, bias, accumulate, out, task_begin, task_end);
}

template <typename T>
FULLCONV_TARGET void rows_forward(const Problem& p, const T* in, const T* w_packed, const T* bias,
                                  bool accumulate, T* out, int64_t task_begin, int64_t task_end) {
  constexpr int L = Simd<T>::kLanes;
  const int64_t cin_g = p.in_channels_per_group(), cout_g = p.out_channels_per_group();
  const int64_t OCB = ceil_div(cout_g, kRowsBlock), ktot = p.kernel_volume();
  const int64_t O0 = p.out_size[0], O1 = p.out_size[1], O2 = p.out_size[2];
  for (int64_t task = task_begin; task < task_end; ++task) {
    int64_t t = task;
    const int64_t o1 = t % O1;
    t /= O1;
    const int64_t o0 = t % O0;
    t /= O0;
    const int64_t n = t % p.batch;
    t /= p.batch;
    const int64_t ocb = t % OCB, g = t / OCB;
    const int64_t oc0 = g * cout_g + ocb * kRowsBlock;
    const int nc = static_cast<int>(std::min<int64_t>(kRowsBlock, cout_g - ocb * kRowsBlock));
    const T* in_n = in + n * p.in_stride_n + g * cin_g * p.in_stride_c;
    const T* w_block = w_packed + (g * OCB + ocb) * ktot * cin_g * kRowsBlock;
    const T* b = bias != nullptr ? bias + oc0 : nullptr;
    T* out_row = out + n * p.out_stride_n + o0 * p.out_stride[0] + o1 * p.out_stride[1] + oc0 * p.out_stride_c;
    static_assert(kRowsBlock == 4, "channel cases below");
    for (int64_t ow0 = 0; ow0 < O2;) {
      const int64_t vectors_left = ceil_div(O2 - ow0, int64_t(L));
      int nv = 0;
      switch (nc) {
        case 1: nv = static_cast<int>(std::min<int64_t>(rows_max_vectors<1>(), vectors_left));
                rows_tile_nv<T, 1>(nv, p, in_n, w_block, b, accumulate, out_row, o0, o1, ow0); break;
        case 2: nv = static_cast<int>(std::min<int64_t>(rows_max_vectors<2>(), vectors_left));
                rows_tile_nv<T, 2>(nv, p, in_n, w_block, b, accumulate, out_row, o0, o1, ow0); break;
        case 3: nv = static_cast<int>(std::min<int64_t>(rows_max_vectors<3>(), vectors_left));
                rows_tile_nv<T, 3>(nv, p, in_n, w_block, b, accumulate, out_row, o0, o1, ow0); break;
        default: nv = static_cast<int>(std::min<int64_t>(rows_max_vectors<4>(), vectors_left));
                 rows_tile_nv<T, 4>(nv, p, in_n, w_block, b, accumulate, out_row, o0, o1, ow0); break;
      }
      ow0 += nv * L;
    }
  }
}

template <typename T>
FULLCONV_TARGET void depthwise_forward(const Problem& p, const T* in, const T* w_packed, const T* bias,
                                       bool accumulate, T* out, int64_t task_begin, int64_t task_end) {
  if (p.depthwise_channels_last) return depthwise_cl_forward<T>(p, in, w_packed, bias, accumulate, out, task_begin, task_end);
  constexpr int L = Simd<T>::kLanes;
  const int64_t O0 = p.out_size[0], O2 = p.out_size[2];
  const int64_t cb = std::max<int64_t>(1, p.depthwise_channels);
  std::vector<char> m, full, any;
  for (int64_t task = task_begin; task < task_end; ++task) {  // (output channel block, n, o0)
    int64_t t = task;
    const int64_t o0 = t % O0;
    t /= O0;
    const int64_t n = t % p.batch, oc0 = (t / p.batch) * cb;
    const int64_t nc = std::min(cb, p.out_channels - oc0);
    for (int64_t ow0 = 0; ow0 < O2;) {
      const int nv = static_cast<int>(std::min<int64_t>(kDepthwiseMaxVectors, ceil_div(O2 - ow0, int64_t(L))));
      static_assert(kDepthwiseMaxVectors == 4, "cases below");
      switch (nv) {
        case 1: depthwise_tile<T, 1>(p, in, w_packed, bias, accumulate, out, n, o0, oc0, nc, ow0, m, full, any); break;
        case 2: depthwise_tile<T, 2>(p, in, w_packed, bias, accumulate, out, n, o0, oc0, nc, ow0, m, full, any); break;
        case 3: depthwise_tile<T, 3>(p, in, w_packed, bias, accumulate, out, n, o0, oc0, nc, ow0, m, full, any); break;
        default: depthwise_tile<T, 4>(p, in, w_packed, bias, accumulate, out, n, o0, oc0, nc, ow0, m, full, any); break;
      }
      ow0 += nv * L;
    }
  }
}

namespace {

// grad_weight() with tiles of NV vectors of output channels (B = NV * lanes, gy_blocked's block).
// BI: input channels per block of x_blocked (at most MaxNI).
template <typename T, int NV, int MaxNI>
FULLCONV_TARGET void grad_weight_blocks(const Problem& p, const T* gy_blocked, const T* x_blocked, int64_t BI,
                                        int64_t n_begin, int64_t n_end, bool accumulate, T* gw,
                                        const WeightStrides& ws, int64_t task_begin, int64_t task_end) {
  constexpr int64_t B = NV * Simd<T>::kLanes;
  const int64_t cin_g = p.in_channels_per_group(), cout_g = p.out_channels_per_group();
  const int64_t OCB = ceil_div(cout_g, B), ICB = ceil_div(cin_g, BI);
  const int64_t ktot = p.kernel_volume();
  const int64_t out_points = p.batch * p.out_size[0] * p.out_size[1] * p.out_size[2];
  const int64_t in_points = p.batch * p.in_size[0] * p.in_size[1] * p.in_size[2];
  for (int64_t task = task_begin; task < task_end; ++task) {
    int64_t t = task;
    const int64_t tap = t % ktot;
    t /= ktot;
    const int64_t icb = t % ICB;
    t /= ICB;
    const int64_t ocb = t % OCB, g = t / OCB;
    const int64_t k[3] = {tap / (p.kernel[1] * p.kernel[2]), (tap / p.kernel[2]) % p.kernel[1],
                          tap % p.kernel[2]};
    const int64_t ic0 = icb * BI, oc0 = g * cout_g + ocb * B;
    const int channels = static_cast<int>(std::min<int64_t>(BI, cin_g - ic0));
    T* dst = gw + oc0 * ws.out_channel + ic0 * ws.in_channel + k[0] * ws.kernel[0] +
             k[1] * ws.kernel[1] + k[2] * ws.kernel[2];
    grad_weight_tile_n<T, NV, MaxNI>(channels, p, gy_blocked + (g * OCB + ocb) * out_points * B,
                              x_blocked + (g * ICB + icb) * in_points * BI, BI, k, n_begin, n_end,
                              accumulate, dst, ws.out_channel, ws.in_channel,
                              std::min(B, cout_g - ocb * B));
  }
}

}  // namespace

template <typename T>
FULLCONV_TARGET void grad_weight(const Problem& p, const T* gy_blocked, const T* x_blocked,
                               int64_t n_begin, int64_t n_end, bool accumulate, T* gw,
                               const WeightStrides& ws, int64_t task_begin, int64_t task_end, int64_t block,
                               int64_t input_block) {
  constexpr int64_t L = Simd<T>::kLanes;
  if (input_block < 1 || input_block > (block == L ? kGradWeightWideInputBlock : kGradWeightInputBlock))
    throw std::logic_error("blocked grad_weight: an input-channel block this build has no tile for");
#if FULLCONV_BLOCKED_WIDTH == 512
  if (block == 4 * L)
    return grad_weight_blocks<T, 4, kGradWeightInputBlock>(p, gy_blocked, x_blocked, input_block, n_begin, n_end,
                                                           accumulate, gw, ws, task_begin, task_end);
#endif
  // one vector of output channels x up to 12 input channels (kGradWeightWideInputBlock; AVX2:
  // 12 accumulators, a weight and a broadcast in its 16 registers)
  if (block == L)
    return grad_weight_blocks<T, 1, kGradWeightWideInputBlock>(p, gy_blocked, x_blocked, input_block, n_begin,
                                                               n_end, accumulate, gw, ws, task_begin, task_end);
  if (block != 2 * L) throw std::logic_error("blocked grad_weight: a gradient blocked in blocks this build has no tile for");
  grad_weight_blocks<T, 2, kGradWeightInputBlock>(p, gy_blocked, x_blocked, input_block, n_begin, n_end, accumulate,
                                                  gw, ws, task_begin, task_end);
}

#if FULLCONV_BLOCKED_BF16
// The bfloat16 build: only the forward tiles on pairs of channels (float32 accumulators, bias
// and output).
FULLCONV_TARGET void forward_bf16(const Problem& p, const Bf16* in, const Bf16* w_packed, const float* bias,
                                  bool accumulate, float* out, int64_t task_begin, int64_t task_end, int64_t block) {
  constexpr int64_t L = Simd<float>::kLanes;
  if (p.in_stride_c != 1 || p.in_channels_per_group() % 2 != 0)
    throw std::logic_error("bfloat16 tiles: the input must be channels-last with an even number of channels per group");
  if (block == 4 * L) return forward_blocks<float, Bf16, 4>(p, in, w_packed, bias, accumulate, out, task_begin, task_end);
  if (block == L) return forward_blocks<float, Bf16, 1>(p, in, w_packed, bias, accumulate, out, task_begin, task_end);
  if (block != 2 * L) throw std::logic_error("bfloat16 tiles: a weight packed in blocks this build has no tile for");
  forward_blocks<float, Bf16, 2>(p, in, w_packed, bias, accumulate, out, task_begin, task_end);
}
#else
// The build's kernels, for blocked_kernels.cpp to dispatch to.
#define FULLCONV_INSTANTIATE(T)                                                                    \
  template void forward<T>(const Problem&, const T*, const T*, const T*, bool, T*, int64_t, int64_t,  \
                           int64_t);                                                               \
  template void rows_forward<T>(const Problem&, const T*, const T*, const T*, bool, T*, int64_t,    \
                                int64_t);                                                          \
  template void depthwise_forward<T>(const Problem&, const T*, const T*, const T*, bool, T*,        \
                                     int64_t, int64_t);                                            \
  template void grad_weight<T>(const Problem&, const T*, const T*, int64_t, int64_t, bool, T*,      \
                               const WeightStrides&, int64_t, int64_t, int64_t, int64_t);
FULLCONV_INSTANTIATE(float)
FULLCONV_INSTANTIATE(double)
#undef FULLCONV_INSTANTIATE
#endif  // FULLCONV_BLOCKED_BF16

}  // namespace FULLCONV_BLOCKED_ISA
}  // namespace blocked
}  // namespace fullconv

#endif  // FULLCONV_BLOCKED_X86
