// Warp-wide tensor-core instructions (sm_80 and newer) at the level of PTX: ldmatrix (four
// 8x8 matrices of 16-bit elements from shared memory, optionally transposed) and
// mma.sync.m16n8k16 (float16 / bfloat16 operands, float32 accumulators). Every lane of a warp
// must execute them together. Register contents per lane follow the PTX ISA's fragment
// layouts (groupID = lane / 4, t = lane % 4):
//   A (16 x 16, row): a[0] = A[g][2t, 2t+1], a[1] = A[g+8][2t, 2t+1], a[2] = A[g][2t+8, 2t+9],
//                     a[3] = A[g+8][2t+8, 2t+9]   (two 16-bit values per register, low first)
//   B (16 x 8, col):  b[0] = B[2t, 2t+1][g], b[1] = B[2t+8, 2t+9][g]
//   C, D (16 x 8):    d[0], d[1] = D[g][2t, 2t+1], d[2], d[3] = D[g+8][2t, 2t+1]
// ldmatrix: lanes 8j..8j+7 give the row addresses (16 bytes each) of matrix j; register j of
// lane L receives matrix j's elements [L/4][2(L%4), +1], or with .trans [2(L%4), +1][L/4].
// The host emulation (tests/cpp/cuda_emulation.h) provides its own versions, which gather the
// 32 lanes' operands and compute the whole warp's result from these layouts.
#pragma once

#include <cstdint>
#include <type_traits>

#include "launch.cuh"

#ifndef FULLCONV_EMULATE
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace fullconv {
namespace cuda {

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* row, bool trans) {
#if FULLCONV_DEVICE_SM80
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(row));
  if (trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
#else
  __trap();  // never launched below sm_80 (the binding checks the compute capability)
#endif
}

// d += a * b on one 16 x 8 x 16 product; T: __half or __nv_bfloat16.
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
#if FULLCONV_DEVICE_SM80
  if constexpr (std::is_same<T, __half>::value)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();
#endif
}

}  // namespace cuda
}  // namespace fullconv
#endif
