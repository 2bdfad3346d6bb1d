// Device helpers shared by the direct (full_conv_kernels.cu) and tiled
// (implicit_gemm_kernels.cuh) CUDA kernels: accumulator types and conversions, the fused
// residual epilogue, and the products of non-finite weights with the implicit padding.
// Torch-free.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "full_conv_cuda.h"

namespace fullconv {
namespace cuda {

// float32 accumulation for every dtype but float64.
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

template <typename T> __device__ __forceinline__ typename Acc<T>::type load(const T* p) {
  return static_cast<typename Acc<T>::type>(*p);
}
template <> __device__ __forceinline__ float load<__half>(const __half* p) { return __half2float(*p); }
template <> __device__ __forceinline__ float load<__nv_bfloat16>(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}
template <typename T> __device__ __forceinline__ T store_as(typename Acc<T>::type v) {
  return static_cast<T>(v);
}
template <> __device__ __forceinline__ __half store_as<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 store_as<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Zero of T (no implicit float -> half/bfloat16 conversions: torch builds with them disabled).
template <typename T> __device__ __forceinline__ T zero_value() {
  return store_as<T>(typename Acc<T>::type(0));
}

// Centred residual of output plane nc at output position o (zero outside the residual).
template <typename T>
__device__ __forceinline__ typename Acc<T>::type residual_value(const Epilogue& ep, int64_t nc,
                                                                const int64_t o[kMaxSpatialDims]) {
  const int64_t r0 = o[0] - ep.pad[0], r1 = o[1] - ep.pad[1], r2 = o[2] - ep.pad[2];
  if (0 <= r0 && r0 < ep.res_size[0] && 0 <= r1 && r1 < ep.res_size[1] && 0 <= r2 && r2 < ep.res_size[2])
    return load(static_cast<const T*>(ep.residual) +
                ((nc * ep.res_size[0] + r0) * ep.res_size[1] + r1) * ep.res_size[2] + r2);
  return typename Acc<T>::type(0);
}

// Rare path: some weight of output channel co is inf/nan. The padded reference multiplies it
// by the padding zeros, which gives nan wherever such a tap falls outside the input: the sum
// of w * 0 over the taps that miss the input at output o (w: (Cout, Cin/g, *kernel)).
template <typename T>
__device__ typename Acc<T>::type padding_products(const T* w, const ConvShape& s, int64_t co,
                                                  const int64_t o[kMaxSpatialDims]) {
  using A = typename Acc<T>::type;
  int64_t lo[kMaxSpatialDims], hi[kMaxSpatialDims];
  for (int i = 0; i < kMaxSpatialDims; ++i)
    tap_range(o[i], s.in_size[i], s.kernel[i], s.stride[i], s.dilation[i], &lo[i], &hi[i]);
  const int64_t cin_g = s.in_channels_per_group(), ktot = s.kernel_volume();
  A acc = A(0);
  for (int64_t ci = 0; ci < cin_g; ++ci)
    for (int64_t t = 0; t < ktot; ++t) {
      int64_t k[kMaxSpatialDims];
      tap_coords(t, s.kernel, k);
      const bool inside = lo[0] <= k[0] && k[0] <= hi[0] && lo[1] <= k[1] && k[1] <= hi[1] &&
                          lo[2] <= k[2] && k[2] <= hi[2];
      if (!inside) acc += load(w + (co * cin_g + ci) * ktot + t) * A(0);
    }
  return acc;
}

// ReLU that keeps nan (as torch.relu does).
template <typename A> __device__ __forceinline__ A relu_keep_nan(A v) {
  return (v > A(0) || v != v) ? v : A(0);
}

}  // namespace cuda
}  // namespace fullconv
