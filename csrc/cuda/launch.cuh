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
#endif

// Device code for sm_80 and newer (tensor-core paths); the emulation counts as such.
#if defined(FULLCONV_EMULATE) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
#define FULLCONV_DEVICE_SM80 1
#else
#define FULLCONV_DEVICE_SM80 0
#endif
