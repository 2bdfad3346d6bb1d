// An 8 x 8 float32 transpose in AVX2 registers, shared by the blocked kernels' NCHW store
// (blocked_kernels_impl.h) and the weight packer's transpose (blocked_kernels.cpp). Callers
// compile for AVX2 (a target attribute, no file-wide -m flags) and run only where the CPU has it.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

namespace fullconv {
namespace blocked {

// col[j] = (r[0][j], r[1][j], ..., r[7][j]): 24 shuffles.
__attribute__((target("avx2"), always_inline)) inline void transpose8x8(const __m256 (&r)[8], __m256 (&col)[8]) {
  // t: rows 2i and 2i+1 interleaved per column pair; u[k]: column k (low 128 bits) and k + 4
  // (high) of rows 0-3 (k < 4) or of rows 4-7 (k >= 4, column k - 4 and k); then the halves of
  // rows 0-3 and 4-7 side by side
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u[8] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),
                       _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE),
                       _mm256_shuffle_ps(t4, t6, 0x44), _mm256_shuffle_ps(t4, t6, 0xEE),
                       _mm256_shuffle_ps(t5, t7, 0x44), _mm256_shuffle_ps(t5, t7, 0xEE)};
  for (int k = 0; k < 4; ++k) {
    col[k] = _mm256_permute2f128_ps(u[k], u[k + 4], 0x20);
    col[k + 4] = _mm256_permute2f128_ps(u[k], u[k + 4], 0x31);
  }
}

}  // namespace blocked
}  // namespace fullconv
#endif
