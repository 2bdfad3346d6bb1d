// Asynchronous global -> shared copies (cp.async, sm_80 and newer), 16 bytes at a time, with
// zero fill: a copy whose `valid` is false writes 16 zero bytes and reads nothing (padding,
// rows or channels past the end). Copies issued by a thread are grouped by
// cp_async_commit(); cp_async_wait<N>() returns once at most the N newest of its groups are
// still in flight. Other threads see the data only after a barrier that follows the wait.
// The host emulation (tests/cpp/cuda_emulation.h) provides its own versions, which perform a
// group's copies only at the wait that retires it, so a read that comes too early shows.
#pragma once

#include "launch.cuh"

#ifndef FULLCONV_EMULATE
namespace fullconv {
namespace cuda {

// dst: shared memory, src: global memory (any valid address when !valid); both 16-byte aligned.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
#if FULLCONV_DEVICE_SM80
  const unsigned shared = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
#else
  __trap();  // never launched below sm_80 (the binding checks the compute capability)
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if FULLCONV_DEVICE_SM80
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if FULLCONV_DEVICE_SM80
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

}  // namespace cuda
}  // namespace fullconv
#endif
