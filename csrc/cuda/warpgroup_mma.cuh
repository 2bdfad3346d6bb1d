// Hopper's warpgroup-wide tensor-core instruction (wgmma, sm_90a) at the level of PTX, for
// float16 / bfloat16 operands read from shared memory through 64-bit matrix descriptors and
// float32 accumulators in registers. A warpgroup is 4 consecutive warps starting at a warp index
// divisible by 4; all 128 threads execute each of these together.
//
// Shared-memory layouts read by the descriptors (the two used here), both with the 128-byte
// swizzle, whose pattern repeats every 1024 bytes (tiles start at a multiple of 1024 bytes of
// the shared window; the hardware swizzles the address bits, bits 4-6 ^= bits 7-9):
//  * K-major (k contiguous; A, or B given as N x K). A tile of R rows (M for A, N for B) and 64
//    k (128 bytes of 16-bit values per row) is stored row after row, 128 bytes a row, in groups
//    of 8 rows (1024 bytes); row r's 16-byte chunk j (its k = 8j .. 8j+7) sits at chunk
//    position j ^ (r % 8) of its row. The descriptor of k slice s (k = 16s .. 16s+15) starts
//    32 s bytes after the tile's first row; leading byte offset unused (1), stride byte offset
//    1024 (one group of 8 rows to the next): wgmma_descriptor_kmajor().
//  * MN-major (n contiguous; B given as K x N, imm-trans-b = 1). Panels of 64 n: in a panel, k
//    row by k row, 128 bytes a row (groups of 8 k rows, 1024 bytes); row k's chunk j (n = 8j ..
//    8j+7 of the panel) at chunk position j ^ (k % 8). Leading byte offset: from one panel of
//    64 n to the next; stride byte offset: from one group of 8 k rows to the next (1024 when
//    the rows are consecutive). The descriptor of k slice s starts 16 s rows (2048 bytes) into
//    the panel: wgmma_descriptor_mnmajor().
// Descriptor fields (PTX ISA, "matrix descriptor"): bits 0-13 start address >> 4, 16-29
// leading-dimension byte offset >> 4, 32-45 stride-dimension byte offset >> 4, 49-51 base
// offset (0: tiles aligned to the pattern), 62-63 the swizzle (1: 128 bytes).
//
// Accumulators of m64n128k16 (64 float registers per thread, thread t of the warpgroup, warp
// w = t / 32, lane l, g = l / 4, q = l % 4): d[4j + 2h + e] = D[16w + 8h + g][8j + 2q + e]
// for j < 16, h, e in {0, 1} (the mma.sync 16 x 8 fragment, repeated along n).
//
// Issue order: wgmma_fence() before the first wgmma of a batch (and after any other access to
// the accumulators), the batch's wgmma calls, wgmma_commit(); wgmma_wait<N>() returns once at
// most the N newest committed batches are still running. Their shared-memory operands must not
// change, nor their accumulators be read, before that; wgmma_hold(d) after the wait keeps the
// compiler from reading them earlier. Shared memory written by threads
// (ordinary stores or cp.async) must be followed by fence_proxy_async() in the writing thread
// and then a barrier before a wgmma reads it.
// The host emulation (tests/cpp/cuda_emulation.h) provides its own versions: it reads the
// operands through the descriptors with this layout model at the wgmma and performs the
// product at the wait that retires it.
#pragma once

#include <cstdint>
#include <type_traits>

#include "launch.cuh"

#ifndef FULLCONV_EMULATE
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

// Device code for sm_90a (wgmma needs the architecture-specific target); the emulation counts
// as such.
#if defined(FULLCONV_EMULATE) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FULLCONV_DEVICE_SM90A 1
#else
#define FULLCONV_DEVICE_SM90A 0
#endif

namespace fullconv {
namespace cuda {

// A descriptor with the 128-byte swizzle: start address, leading and stride byte offsets.
__host__ __device__ constexpr uint64_t wgmma_descriptor_sw128(uint32_t address, uint32_t leading, uint32_t stride) {
  return uint64_t((address & 0x3ffffu) >> 4) | (uint64_t((leading & 0x3ffffu) >> 4) << 16) |
         (uint64_t((stride & 0x3ffffu) >> 4) << 32) | (uint64_t(1) << 62);
}
// A K-major operand whose first row starts at shared address `address` (see above; `address`
// - 32 s must be a multiple of 1024 for slice s).
__host__ __device__ constexpr uint64_t wgmma_descriptor_kmajor(uint32_t address) {
  return wgmma_descriptor_sw128(address, 16, 1024);
}
// An MN-major operand (B as K x N) whose slice starts at shared address `address` (a multiple
// of 1024), its panels of 64 n `panel_bytes` apart.
__host__ __device__ constexpr uint64_t wgmma_descriptor_mnmajor(uint32_t address, uint32_t panel_bytes) {
  return wgmma_descriptor_sw128(address, panel_bytes, 1024);
}

#ifndef FULLCONV_EMULATE
// The shared-window address of a pointer into shared memory.
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void wgmma_fence() {
#if FULLCONV_DEVICE_SM90A
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
  __trap();  // never launched without sm_90a code (callers check wgmma_available())
#endif
}

__device__ __forceinline__ void wgmma_commit() {
#if FULLCONV_DEVICE_SM90A
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if FULLCONV_DEVICE_SM90A
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

// Orders this thread's earlier shared-memory writes (generic proxy: stores, cp.async) before
// later reads by the tensor cores (async proxy); a barrier must follow for other threads' reads.
__device__ __forceinline__ void fence_proxy_async() {
#if FULLCONV_DEVICE_SM90A
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Keeps the compiler from moving other accesses of the accumulators d across this point:
// call it after the wgmma_wait() that retires their products and before reading them (the
// wait itself names no registers, so a read could otherwise be scheduled ahead of it), and
// after setting them before the first wgmma_fence(). No instruction is emitted.
__device__ __forceinline__ void wgmma_hold(float d[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// (one asm statement per operand type TYPE, "f16" or "bf16")
#define FULLCONV_WGMMA_M64N128K16(TYPE) \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " " \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, " \
      "%64, %65, p, 1, 1, 0, %67;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]) \
      : "l"(a), "l"(b), "r"(int(accumulate)), "n"(int(MnMajorB)))

// d (+)= A B over the warpgroup's 64 x 128 x 16 product; A: 64 x 16 at descriptor a
// (K-major), B: 16 x 128 at descriptor b, K-major (B^T stored N x K) or with MnMajorB N-major
// (stored K x N); accumulate = false overwrites d. T: __half or __nv_bfloat16. (No "memory"
// clobber: shared memory is ordered by the fence and the wait around a batch, which have one.)
template <typename T, bool MnMajorB = false>
__device__ __forceinline__ void wgmma_m64n128k16(float d[64], uint64_t a, uint64_t b, bool accumulate) {
  static_assert(std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value, "16-bit operands");
#if FULLCONV_DEVICE_SM90A
  if constexpr (std::is_same<T, __half>::value)
    FULLCONV_WGMMA_M64N128K16("f16");
  else
    FULLCONV_WGMMA_M64N128K16("bf16");
#else
  __trap();
#endif
}
#endif  // FULLCONV_EMULATE

}  // namespace cuda
}  // namespace fullconv
