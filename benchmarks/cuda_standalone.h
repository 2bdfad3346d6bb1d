// Helpers of the torch-free CUDA drivers in benchmarks/ (cuda_profile_standalone.cpp,
// probe/mainloop_probe.cpp): a checked runtime call, a device buffer of random float16 values,
// the median time of a launch by CUDA events.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <vector>

#define CHECK(call)                                                                                  \
  do {                                                                                               \
    cudaError_t err_ = (call);                                                                       \
    if (err_ != cudaSuccess) {                                                                       \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(err_)); \
      std::exit(1);                                                                                  \
    }                                                                                                \
  } while (0)

// count float16 values drawn from N(0, scale^2), copied to a new device buffer
inline void* random_half(size_t count, float scale, std::mt19937& gen) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<__half> host(count);
  for (auto& h : host) h = __float2half(dist(gen));
  void* dev = nullptr;
  CHECK(cudaMalloc(&dev, count * sizeof(__half)));
  CHECK(cudaMemcpy(dev, host.data(), count * sizeof(__half), cudaMemcpyHostToDevice));
  return dev;
}

// the median over reps runs of launch (milliseconds, CUDA events on the default stream)
inline float median_ms(const std::function<void()>& launch, int reps) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    CHECK(cudaEventRecord(a));
    launch();
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    float t = 0;
    CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}
