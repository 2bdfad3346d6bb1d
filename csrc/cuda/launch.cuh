// Kernel launches and shared arrays through macros, so the same sources also build for the host emulation
// of the CUDA execution model (tests/cpp/cuda_emulation.h defines FULLCONV_EMULATE and its
// own versions of these): FULLCONV_LAUNCH(grid, block, stream, kernel<...>)(args...).
#pragma once

#ifndef FULLCONV_EMULATE
// A block's shared array: FULLCONV_SHARED(type, name, count, alignment).
#define FULLCONV_SHARED(type, name, count, align) __shared__ __align__(align) type name[count]
#define FULLCONV_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<(grid), (block), 0, (stream)>>>
// the launch's own error (configuration, missing image for this GPU)
#define FULLCONV_LAUNCH_STATUS() cudaGetLastError()
// A block's dynamic shared memory (`bytes` at launch, FULLCONV_LAUNCH_SMEM), 128-byte aligned;
// more than 48 KiB needs allow_dynamic_smem() first.
#define FULLCONV_DYNAMIC_SHARED(name, bytes) extern __shared__ __align__(128) unsigned char name[]
#define FULLCONV_LAUNCH_SMEM(grid, block, smem, stream, ...) __VA_ARGS__<<<(grid), (block), (smem), (stream)>>>
template <typename Kernel>
cudaError_t allow_dynamic_smem(Kernel* kernel, int bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), cudaFuncAttributeMaxDynamicSharedMemorySize,
                              bytes);
}
#endif

#ifndef FULLCONV_EMULATE
// The most blocks a kernel with a block-stride loop launches (the loop covers the rest); the
// emulation lowers it so that those loops go round in its tests.
inline long long grid_cap() { return 1LL << 24; }
#endif

// Device code for sm_80 and newer (tensor-core paths); the emulation counts as such.
#if defined(FULLCONV_EMULATE) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
#define FULLCONV_DEVICE_SM80 1
#else
#define FULLCONV_DEVICE_SM80 0
#endif
