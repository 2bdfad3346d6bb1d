// Run-time choice between the builds of the blocked kernels (blocked_kernels_impl.h) and the
// parts that need no vector instructions. No torch headers here.
#include "blocked_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "../conv_shape.h"

#include "transpose8.h"

namespace fullconv {
namespace blocked {

// Per-build kernels (blocked_kernels_avx2.cpp, blocked_kernels_avx512.cpp).
#define FULLCONV_DECLARE_BUILD(NS)                                                                  \
  namespace NS {                                                                                    \
  template <typename T>                                                                             \
  void forward(const Problem& p, const T* in, const T* w_packed, const T* bias, bool accumulate,   \
               T* out, int64_t task_begin, int64_t task_end, int64_t block);                        \
  template <typename T>                                                                             \
  void rows_forward(const Problem& p, const T* in, const T* w_packed, const T* bias, bool accumulate, \
                    T* out, int64_t task_begin, int64_t task_end);                                  \
  template <typename T>                                                                             \
  void depthwise_forward(const Problem& p, const T* in, const T* w_packed, const T* bias,          \
                         bool accumulate, T* out, int64_t task_begin, int64_t task_end);            \
  template <typename T>                                                                             \
  void grad_weight(const Problem& p, const T* gy_blocked, const T* x_blocked, int64_t n_begin,     \
                   int64_t n_end, bool accumulate, T* gw, const WeightStrides& ws,                 \
                   int64_t task_begin, int64_t task_end, int64_t block, int64_t input_block);       \
  }
FULLCONV_DECLARE_BUILD(avx2)
FULLCONV_DECLARE_BUILD(avx512)
#undef FULLCONV_DECLARE_BUILD
#if FULLCONV_BLOCKED_BF16_BUILT
namespace avx512bf16 {  // blocked_kernels_avx512bf16.cpp
void forward_bf16(const Problem& p, const Bf16* in, const Bf16* w_packed, const float* bias, bool accumulate,
                  float* out, int64_t task_begin, int64_t task_end, int64_t block);
}
#endif

int64_t forward_task_count(const Problem& p, int64_t block) {
  const int64_t ocb = ceil_div(p.out_channels_per_group(), block);
  return p.groups * ocb * p.batch * p.out_size[0] * p.out_size[1];
}

int64_t depthwise_task_count(const Problem& p) {
  if (p.depthwise_channels_last) return p.batch * p.out_size[0] * p.out_size[1];
  return ceil_div(p.out_channels, std::max<int64_t>(1, p.depthwise_channels)) * p.batch * p.out_size[0];
}

int64_t grad_weight_task_count(const Problem& p, int64_t block, int64_t input_block) {
  const int64_t ocb = ceil_div(p.out_channels_per_group(), block);
  const int64_t icb = ceil_div(p.in_channels_per_group(), input_block);
  return p.groups * ocb * icb * p.kernel_volume();
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "none";
  }
}

#if FULLCONV_BLOCKED_X86

namespace {
Isa best_isa() {
  static const Isa best = [] {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return Isa::kNone;
    return __builtin_cpu_supports("avx512f") ? Isa::kAvx512 : Isa::kAvx2;
  }();
  return best;
}
}  // namespace

Isa isa() {
  const Isa best = best_isa();
  const char* env = std::getenv("FULLCONV_CPU_BLOCKED_ISA");
  if (env == nullptr || *env == '\0' || std::strcmp(env, "auto") == 0) return best;
  Isa want;
  if (std::strcmp(env, "avx2") == 0) want = Isa::kAvx2;
  else if (std::strcmp(env, "avx512") == 0) want = Isa::kAvx512;
  else throw std::invalid_argument(std::string("FULLCONV_CPU_BLOCKED_ISA must be auto, avx2 or avx512, got '") + env + "'");
  if (static_cast<int>(want) > static_cast<int>(best))
    throw std::invalid_argument(std::string("FULLCONV_CPU_BLOCKED_ISA=") + env + ": this CPU supports only " + isa_name(best));
  return want;
}

namespace {
// Runs the AVX-512 or the AVX2 build of a kernel.
template <typename Avx512, typename Avx2>
void by_isa(Isa isa, Avx512 avx512_kernel, Avx2 avx2_kernel) {
  if (isa == Isa::kAvx512) avx512_kernel();
  else if (isa == Isa::kAvx2) avx2_kernel();
  else throw std::logic_error("blocked kernels called without a supported instruction set");
}
}  // namespace

template <typename T>
void forward(Isa isa, const Problem& p, const T* in, const T* w_packed, const T* bias, bool accumulate,
             T* out, int64_t task_begin, int64_t task_end, int64_t block) {
  by_isa(isa, [&] { avx512::forward<T>(p, in, w_packed, bias, accumulate, out, task_begin, task_end, block); },
         [&] { avx2::forward<T>(p, in, w_packed, bias, accumulate, out, task_begin, task_end, block); });
}

template <typename T>
void rows_forward(Isa isa, const Problem& p, const T* in, const T* w_packed, const T* bias, bool accumulate,
                  T* out, int64_t task_begin, int64_t task_end) {
  by_isa(isa, [&] { avx512::rows_forward<T>(p, in, w_packed, bias, accumulate, out, task_begin, task_end); },
         [&] { avx2::rows_forward<T>(p, in, w_packed, bias, accumulate, out, task_begin, task_end); });
}

template <typename T>
void depthwise_forward(Isa isa, const Problem& p, const T* in, const T* w_packed, const T* bias, bool accumulate,
                       T* out, int64_t task_begin, int64_t task_end) {
  by_isa(isa, [&] { avx512::depthwise_forward<T>(p, in, w_packed, bias, accumulate, out, task_begin, task_end); },
         [&] { avx2::depthwise_forward<T>(p, in, w_packed, bias, accumulate, out, task_begin, task_end); });
}

template <typename T>
void grad_weight(Isa isa, const Problem& p, const T* gy_blocked, const T* x_blocked, int64_t n_begin,
                 int64_t n_end, bool accumulate, T* gw, const WeightStrides& ws, int64_t task_begin,
                 int64_t task_end, int64_t block, int64_t input_block) {
  by_isa(isa,
         [&] { avx512::grad_weight<T>(p, gy_blocked, x_blocked, n_begin, n_end, accumulate, gw, ws, task_begin, task_end,
                                      block, input_block); },
         [&] { avx2::grad_weight<T>(p, gy_blocked, x_blocked, n_begin, n_end, accumulate, gw, ws, task_begin, task_end,
                                    block, input_block); });
}

#if FULLCONV_BLOCKED_BF16_BUILT
bool bf16_available() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return best_isa() == Isa::kAvx512 && __builtin_cpu_supports("avx512bf16");
  }();
  return ok;
}

void forward_bf16(const Problem& p, const Bf16* in, const Bf16* w_packed, const float* bias, bool accumulate,
                  float* out, int64_t task_begin, int64_t task_end, int64_t block) {
  if (!bf16_available()) throw std::logic_error("bfloat16 tiles called on a CPU without AVX512_BF16");
  avx512bf16::forward_bf16(p, in, w_packed, bias, accumulate, out, task_begin, task_end, block);
}
#else
bool bf16_available() { return false; }
void forward_bf16(const Problem&, const Bf16*, const Bf16*, const float*, bool, float*, int64_t, int64_t, int64_t) {
  throw std::logic_error("bfloat16 tiles are not built by this compiler");
}
#endif

namespace {
// Whole 8 x 8 blocks of transpose_to_runs for float32; returns the rows done (a multiple of 8)
// and sets *nonfinite if an element it moved is infinite or NaN.
__attribute__((target("avx2"))) int64_t transpose_blocks_avx2(const float* src, int64_t ld, int64_t rows,
                                                              int64_t cols, const int64_t* dst_off, float* dst,
                                                              bool* nonfinite) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 products = zero;  // OR of x * 0 over the elements: +-0 while all are finite, NaN after
  bool scalar_nonfinite = false;
  int64_t b0 = 0;
  for (; b0 + 8 <= rows; b0 += 8) {
    int64_t j0 = 0;
    for (; j0 + 8 <= cols; j0 += 8) {
      __m256 r[8], col[8];
      for (int i = 0; i < 8; ++i) {
        r[i] = _mm256_loadu_ps(src + (b0 + i) * ld + j0);
        products = _mm256_or_ps(products, _mm256_mul_ps(r[i], zero));
      }
      transpose8x8(r, col);
      for (int k = 0; k < 8; ++k) _mm256_storeu_ps(dst + dst_off[j0 + k] + b0, col[k]);
    }
    for (; j0 < cols; ++j0)
      for (int i = 0; i < 8; ++i) {
        const float v = src[(b0 + i) * ld + j0];
        scalar_nonfinite = scalar_nonfinite || !std::isfinite(v);
        dst[dst_off[j0] + b0 + i] = v;
      }
  }
  if (scalar_nonfinite || _mm256_movemask_ps(_mm256_cmp_ps(products, products, _CMP_UNORD_Q)) != 0) *nonfinite = true;
  return b0;
}

template <typename T>
int64_t transpose_blocks(const T*, int64_t, int64_t, int64_t, const int64_t*, T*, bool*) {
  return 0;
}
template <>
int64_t transpose_blocks<float>(const float* src, int64_t ld, int64_t rows, int64_t cols, const int64_t* dst_off,
                                float* dst, bool* nonfinite) {
  return best_isa() == Isa::kNone ? 0 : transpose_blocks_avx2(src, ld, rows, cols, dst_off, dst, nonfinite);
}
}  // namespace

namespace {
// Whole 8-position chunks through 8 x 8 transposes (8 channels x 8 positions in, one 8-channel
// store per position out, masked where the block ends within the 8); returns the positions done.
__attribute__((target("avx2"))) int64_t gather_rows_avx2(const float* src, int64_t sc, int64_t rows, int64_t S,
                                                         int64_t block, float* dst) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i tail_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(block % 8)), lane);
  int64_t s0 = 0;
  for (; s0 + 8 <= S; s0 += 8) {
    for (int64_t j0 = 0; j0 < block; j0 += 8) {
      __m256 r[8], col[8];
      for (int i = 0; i < 8; ++i) r[i] = j0 + i < rows ? _mm256_loadu_ps(src + (j0 + i) * sc + s0) : zero;
      transpose8x8(r, col);
      float* d = dst + s0 * block + j0;
      if (j0 + 8 <= block) {
        for (int k = 0; k < 8; ++k) _mm256_storeu_ps(d + k * block, col[k]);
      } else {
        for (int k = 0; k < 8; ++k) _mm256_maskstore_ps(d + k * block, tail_mask, col[k]);
      }
    }
  }
  return s0;
}

template <typename T>
int64_t gather_rows_fast(const T*, int64_t, int64_t, int64_t, int64_t, T*) {
  return 0;
}
template <>
int64_t gather_rows_fast<float>(const float* src, int64_t sc, int64_t rows, int64_t S, int64_t block, float* dst) {
  return best_isa() == Isa::kNone ? 0 : gather_rows_avx2(src, sc, rows, S, block, dst);
}
}  // namespace

namespace {
// One tile of transpose_matrices through registers: 8 x 8 float32 or 4 x 4 float64,
// d[j * ldd + i] = s[i * lds + j].
__attribute__((target("avx2"), always_inline)) inline void transpose_tile(const float* s, int64_t lds, float* d,
                                                                          int64_t ldd) {
  __m256 r[8], col[8];
  for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(s + k * lds);
  transpose8x8(r, col);
  for (int k = 0; k < 8; ++k) _mm256_storeu_ps(d + k * ldd, col[k]);
}
__attribute__((target("avx2"), always_inline)) inline void transpose_tile(const double* s, int64_t lds, double* d,
                                                                          int64_t ldd) {
  __m256d r[4];
  for (int k = 0; k < 4; ++k) r[k] = _mm256_loadu_pd(s + k * lds);
  // (r0[0] r1[0] r0[2] r1[2]), (r0[1] r1[1] r0[3] r1[3]), the same of rows 2 and 3
  const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
  const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
  _mm256_storeu_pd(d, _mm256_permute2f128_pd(t0, t2, 0x20));
  _mm256_storeu_pd(d + ldd, _mm256_permute2f128_pd(t1, t3, 0x20));
  _mm256_storeu_pd(d + 2 * ldd, _mm256_permute2f128_pd(t0, t2, 0x31));
  _mm256_storeu_pd(d + 3 * ldd, _mm256_permute2f128_pd(t1, t3, 0x31));
}

// Rows [i0, i1) of one matrix of transpose_matrices, columns [j0, j1): whole tiles (32 bytes
// a row) through transpose_tile, the columns past the last whole tile one by one; returns the
// rows done (a multiple of the tile), the caller moves the rest.
template <typename T>
__attribute__((target("avx2"))) int64_t transpose_tiles_avx2(const T* src, int64_t ld_src, int64_t i0, int64_t i1,
                                                             int64_t j0, int64_t j1, T* dst, int64_t ld_dst) {
  constexpr int64_t kTile = 32 / sizeof(T);
  int64_t i = i0;
  for (; i + kTile <= i1; i += kTile) {
    int64_t j = j0;
    for (; j + kTile <= j1; j += kTile) transpose_tile(src + i * ld_src + j, ld_src, dst + j * ld_dst + i, ld_dst);
    for (; j < j1; ++j)
      for (int64_t k = 0; k < kTile; ++k) dst[j * ld_dst + i + k] = src[(i + k) * ld_src + j];
  }
  return i;
}
template <typename T>
int64_t transpose_tiles(const T* src, int64_t ld_src, int64_t i0, int64_t i1, int64_t j0, int64_t j1, T* dst,
                        int64_t ld_dst) {
  return best_isa() == Isa::kNone ? i0 : transpose_tiles_avx2(src, ld_src, i0, i1, j0, j1, dst, ld_dst);
}
}  // namespace

template <typename T>
bool transpose_to_runs(const T* src, int64_t ld, int64_t rows, int64_t cols, const int64_t* dst_off, T* dst) {
  bool nonfinite = false;
  for (int64_t b = transpose_blocks<T>(src, ld, rows, cols, dst_off, dst, &nonfinite); b < rows; ++b)
    for (int64_t j = 0; j < cols; ++j) {
      const T v = src[b * ld + j];
      nonfinite = nonfinite || !std::isfinite(v);
      dst[dst_off[j] + b] = v;
    }
  return !nonfinite;
}

#else  // not x86-64 with GCC/Clang: no blocked kernels; callers check available()

Isa isa() { return Isa::kNone; }
bool bf16_available() { return false; }
void forward_bf16(const Problem&, const Bf16*, const Bf16*, const float*, bool, float*, int64_t, int64_t, int64_t) {
  throw std::logic_error("blocked kernels are not built for this CPU");
}

template <typename T>
void forward(Isa, const Problem&, const T*, const T*, const T*, bool, T*, int64_t, int64_t, int64_t) {
  throw std::logic_error("blocked kernels are not built for this CPU");
}
template <typename T>
void rows_forward(Isa, const Problem&, const T*, const T*, const T*, bool, T*, int64_t, int64_t) {
  throw std::logic_error("blocked kernels are not built for this CPU");
}
template <typename T>
void depthwise_forward(Isa, const Problem&, const T*, const T*, const T*, bool, T*, int64_t, int64_t) {
  throw std::logic_error("blocked kernels are not built for this CPU");
}
template <typename T>
void grad_weight(Isa, const Problem&, const T*, const T*, int64_t, int64_t, bool, T*, const WeightStrides&,
                 int64_t, int64_t, int64_t, int64_t) {
  throw std::logic_error("blocked kernels are not built for this CPU");
}

template <typename T>
bool transpose_to_runs(const T* src, int64_t ld, int64_t rows, int64_t cols, const int64_t* dst_off, T* dst) {
  bool nonfinite = false;
  for (int64_t b = 0; b < rows; ++b)
    for (int64_t j = 0; j < cols; ++j) {
      const T v = src[b * ld + j];
      nonfinite = nonfinite || !std::isfinite(v);
      dst[dst_off[j] + b] = v;
    }
  return !nonfinite;
}

namespace {
// no vector path: transpose_matrices and gather_channel_blocks move every element one by one
template <typename T>
int64_t transpose_tiles(const T*, int64_t, int64_t i0, int64_t, int64_t, int64_t, T*, int64_t) {
  return i0;
}

template <typename T>
int64_t gather_rows_fast(const T*, int64_t, int64_t, int64_t, int64_t, T*) {
  return 0;
}
}  // namespace

#endif

namespace {
// One task of gather_channel_blocks: `rows` (<= block) source rows of S contiguous elements,
// `sc` apart, into [S][block] (rows past `rows` zero), positions from s0 on.
template <typename T>
void gather_rows_scalar(const T* src, int64_t sc, int64_t rows, int64_t S, int64_t block, T* dst, int64_t s0) {
  for (int64_t s = s0; s < S; ++s) {
    T* d = dst + s * block;
    for (int64_t j = 0; j < rows; ++j) d[j] = src[j * sc + s];
    for (int64_t j = rows; j < block; ++j) d[j] = T(0);
  }
}

}  // namespace

template <typename T>
void gather_channel_blocks(const T* src, int64_t sn, int64_t sc, int64_t N, int64_t /*G: tasks know it*/, int64_t cg,
                           int64_t S, int64_t block, T* dst, int64_t task_begin, int64_t task_end) {
  const int64_t CB = ceil_div(cg, block);
  for (int64_t task = task_begin; task < task_end; ++task) {  // (g, cb, n)
    const int64_t n = task % N, gcb = task / N, cb = gcb % CB, g = gcb / CB;
    const T* s_task = src + n * sn + (g * cg + cb * block) * sc;
    T* d_task = dst + task * S * block;
    const int64_t rows = std::min(block, cg - cb * block);
    gather_rows_scalar(s_task, sc, rows, S, block, d_task, gather_rows_fast<T>(s_task, sc, rows, S, block, d_task));
  }
}

int64_t transpose_task_count(int64_t N, int64_t rows, int64_t cols) {
  return N * ceil_div(rows, kTransposeRows) * ceil_div(cols, kTransposeColumns);
}

template <typename T>
void transpose_matrices(const T* src, int64_t sn, int64_t ld_src, int64_t /*N: tasks know it*/, int64_t rows,
                        int64_t cols, T* dst, int64_t dn, int64_t ld_dst, int64_t task_begin, int64_t task_end) {
  // columns in blocks, so the destination rows a block writes stay in cache across its rows
  constexpr int64_t kColumns = 64;
  const int64_t row_chunks = ceil_div(rows, kTransposeRows), col_chunks = ceil_div(cols, kTransposeColumns);
  for (int64_t task = task_begin; task < task_end; ++task) {  // (n, chunk of rows, chunk of columns)
    const int64_t c = task % col_chunks, r = task / col_chunks % row_chunks, n = task / col_chunks / row_chunks;
    const int64_t i0 = r * kTransposeRows, i1 = std::min(rows, i0 + kTransposeRows);
    const int64_t c1 = std::min(cols, (c + 1) * kTransposeColumns);
    const T* s = src + n * sn;
    T* d = dst + n * dn;
    for (int64_t j0 = c * kTransposeColumns; j0 < c1; j0 += kColumns) {
      const int64_t j1 = std::min(c1, j0 + kColumns);
      for (int64_t i = transpose_tiles<T>(s, ld_src, i0, i1, j0, j1, d, ld_dst); i < i1; ++i)
        for (int64_t j = j0; j < j1; ++j) d[j * ld_dst + i] = s[i * ld_src + j];
    }
  }
}

template void transpose_matrices<float>(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*, int64_t,
                                        int64_t, int64_t, int64_t);
template void transpose_matrices<double>(const double*, int64_t, int64_t, int64_t, int64_t, int64_t, double*,
                                         int64_t, int64_t, int64_t, int64_t);

template bool transpose_to_runs<float>(const float*, int64_t, int64_t, int64_t, const int64_t*, float*);
template void gather_channel_blocks<float>(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                           int64_t, float*, int64_t, int64_t);
template void gather_channel_blocks<double>(const double*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                            int64_t, double*, int64_t, int64_t);
template bool transpose_to_runs<double>(const double*, int64_t, int64_t, int64_t, const int64_t*, double*);
template void forward<float>(Isa, const Problem&, const float*, const float*, const float*, bool, float*,
                             int64_t, int64_t, int64_t);
template void forward<double>(Isa, const Problem&, const double*, const double*, const double*, bool,
                              double*, int64_t, int64_t, int64_t);
template void rows_forward<float>(Isa, const Problem&, const float*, const float*, const float*, bool,
                                  float*, int64_t, int64_t);
template void rows_forward<double>(Isa, const Problem&, const double*, const double*, const double*, bool,
                                   double*, int64_t, int64_t);
template void depthwise_forward<float>(Isa, const Problem&, const float*, const float*, const float*, bool,
                                       float*, int64_t, int64_t);
template void depthwise_forward<double>(Isa, const Problem&, const double*, const double*, const double*,
                                        bool, double*, int64_t, int64_t);
template void grad_weight<float>(Isa, const Problem&, const float*, const float*, int64_t, int64_t, bool,
                                 float*, const WeightStrides&, int64_t, int64_t, int64_t, int64_t);
template void grad_weight<double>(Isa, const Problem&, const double*, const double*, int64_t, int64_t,
                                  bool, double*, const WeightStrides&, int64_t, int64_t, int64_t, int64_t);

}  // namespace blocked
}  // namespace fullconv
