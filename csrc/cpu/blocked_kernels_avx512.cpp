// The blocked kernels built for AVX-512F (512-bit vectors: tiles of twice the channels, half
// the instructions per product of the AVX2 build); see blocked_kernels_impl.h.
#define FULLCONV_BLOCKED_ISA avx512
#define FULLCONV_TARGET __attribute__((target("avx512f,avx2,fma")))
#define FULLCONV_BLOCKED_WIDTH 512
#include "blocked_kernels_impl.h"

#if FULLCONV_BLOCKED_X86
namespace fullconv {
namespace blocked {
namespace avx512 {
template void forward<float>(const Problem&, const float*, const float*, const float*, bool, float*,
                             int64_t, int64_t);
template void forward<double>(const Problem&, const double*, const double*, const double*, bool,
                              double*, int64_t, int64_t);
template void rows_forward<float>(const Problem&, const float*, const float*, const float*, bool, float*,
                                  int64_t, int64_t);
template void rows_forward<double>(const Problem&, const double*, const double*, const double*, bool,
                                   double*, int64_t, int64_t);
template void depthwise_forward<float>(const Problem&, const float*, const float*, const float*, bool,
                                       float*, int64_t, int64_t);
template void depthwise_forward<double>(const Problem&, const double*, const double*, const double*, bool,
                                        double*, int64_t, int64_t);
template void grad_weight<float>(const Problem&, const float*, const float*, int64_t, int64_t, bool,
                                 float*, const WeightStrides&, int64_t, int64_t);
template void grad_weight<double>(const Problem&, const double*, const double*, int64_t, int64_t,
                                  bool, double*, const WeightStrides&, int64_t, int64_t);
}  // namespace avx512
}  // namespace blocked
}  // namespace fullconv
#endif
