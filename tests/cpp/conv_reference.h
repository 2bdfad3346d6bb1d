// Full convolution and its gradients written out from the definition i = o*s + k*d - p
// (independent of csrc/conv_shape.h's helpers), in double: the baseline of the C++ tests.
#pragma once

#include <cstdint>
#include <vector>

#include "conv_shape.h"

struct Problem {
  fullconv::ConvShape s;
  std::vector<double> x, w, gy;
};

inline int64_t flat3(const int64_t size[3], const int64_t i[3]) { return (i[0] * size[1] + i[1]) * size[2] + i[2]; }

// Loops over every (output position o, tap k) pair whose input index is real: calls
// f(o_flat, k_flat, i_flat). The definition, independent of conv_shape.h's helpers.
template <typename F>
inline void for_each_product(const fullconv::ConvShape& s, F&& f) {
  int64_t o[3], k[3], i[3];
  for (o[0] = 0; o[0] < s.out_size[0]; ++o[0])
    for (o[1] = 0; o[1] < s.out_size[1]; ++o[1])
      for (o[2] = 0; o[2] < s.out_size[2]; ++o[2])
        for (k[0] = 0; k[0] < s.kernel[0]; ++k[0])
          for (k[1] = 0; k[1] < s.kernel[1]; ++k[1])
            for (k[2] = 0; k[2] < s.kernel[2]; ++k[2]) {
              bool inside = true;
              for (int d = 0; d < 3; ++d) {
                i[d] = o[d] * s.stride[d] + k[d] * s.dilation[d] - s.dilation[d] * (s.kernel[d] - 1);
                inside = inside && 0 <= i[d] && i[d] < s.in_size[d];
              }
              if (inside) f(flat3(s.out_size, o), flat3(s.kernel, k), flat3(s.in_size, i));
            }
}

inline void reference(const Problem& P, std::vector<double>& y, std::vector<double>& gx, std::vector<double>& gw) {
  const fullconv::ConvShape& s = P.s;
  const int64_t cin_g = s.in_channels_per_group(), cout_g = s.out_channels_per_group();
  const int64_t taps = s.kernel_volume(), isp = s.in_spatial(), osp = s.out_spatial();
  y.assign(s.batch * s.out_channels * osp, 0.0);
  gx.assign(s.batch * s.in_channels * isp, 0.0);
  gw.assign(s.out_channels * cin_g * taps, 0.0);
  for_each_product(s, [&](int64_t o, int64_t k, int64_t i) {
    for (int64_t n = 0; n < s.batch; ++n)
      for (int64_t co = 0; co < s.out_channels; ++co)
        for (int64_t ci = 0; ci < cin_g; ++ci) {
          const int64_t c = co / cout_g * cin_g + ci;
          const int64_t xi = (n * s.in_channels + c) * isp + i, yo = (n * s.out_channels + co) * osp + o;
          const int64_t wi = (co * cin_g + ci) * taps + k;
          y[yo] += P.w[wi] * P.x[xi];
          gx[xi] += P.w[wi] * P.gy[yo];
          gw[wi] += P.gy[yo] * P.x[xi];
        }
  });
}

