// Brute-force check of every helper in csrc/conv_shape.h against the defining relation
// i = o*s + k*d - p, over all small (L, K, s, d). The CUDA kernels use the same helpers.
#include <cstdio>

#include "conv_shape.h"
#include "expect.h"

using namespace fullconv;

int main() {
  long checks = 0;
  for (int64_t L = 1; L <= 13; ++L)
    for (int64_t K = 1; K <= 7; ++K)
      for (int64_t s = 1; s <= 5; ++s)
        for (int64_t d = 1; d <= 4; ++d) {
          const int64_t p = full_padding(K, d);
          const int64_t Lout = full_output_size(L, K, s, d);
          // output size: the largest o with o*s <= L - 1 + p (the last input through tap 0)
          EXPECT(Lout == (L + 2 * p - d * (K - 1) - 1) / s + 1, "Lout L=%ld K=%ld\n", (long)L, (long)K);
          for (int64_t o = 0; o < Lout; ++o) {
            int64_t lo, hi;
            tap_range(o, L, K, s, d, &lo, &hi);
            for (int64_t k = 0; k < K; ++k) {
              const int64_t i = o * s + k * d - p;
              const bool inside = 0 <= i && i < L;
              EXPECT(inside == (lo <= k && k <= hi), "tap_range L=%ld K=%ld s=%ld d=%ld o=%ld k=%ld\n",
                     (long)L, (long)K, (long)s, (long)d, (long)o, (long)k);
              ++checks;
            }
          }
          for (int64_t k = 0; k < K; ++k) {
            int64_t olo, ohi;
            tap_output_range(k, L, K, s, d, &olo, &ohi);
            const int64_t r = tap_residue(k, K, s, d);
            EXPECT(0 <= r && r < s, "residue range\n");
            for (int64_t o = 0; o < Lout; ++o) {
              const int64_t i = o * s + k * d - p;
              const bool inside = 0 <= i && i < L;
              EXPECT(inside == (olo <= o && o <= ohi), "tap_output_range L=%ld K=%ld s=%ld d=%ld k=%ld o=%ld\n",
                     (long)L, (long)K, (long)s, (long)d, (long)k, (long)o);
              ++checks;
            }
            // Scatter view: every input of class r reaches a valid output through tap k,
            // consecutive inputs of the class reach consecutive outputs.
            for (int64_t i = 0; i < L; ++i) {
              const bool reaches = (i + p - k * d) % s == 0;
              EXPECT(reaches == (i % s == r), "tap_residue L=%ld K=%ld s=%ld d=%ld k=%ld i=%ld\n",
                     (long)L, (long)K, (long)s, (long)d, (long)k, (long)i);
              if (reaches) {
                const int64_t o = (i + p - k * d) / s;
                EXPECT(0 <= o && o < Lout, "output out of range\n");
                EXPECT(o == tap_output_start(r, k, K, s, d) + (i - r) / s, "tap_output_start\n");
              }
              ++checks;
            }
            EXPECT(residue_count(L, s, r) == (r < L ? (L - 1 - r) / s + 1 : 0), "residue_count\n");
          }
        }
  // Arbitrary implicit padding (0 .. beyond full) and output lengths: the general forms the
  // blocked CPU kernels use (a stride-1 grad_input is a correlation with pad = 0).
  for (int64_t a = -9; a <= 9; ++a)
    for (int64_t b = 1; b <= 4; ++b) {
      int64_t f = 0;
      while ((f + 1) * b <= a) ++f;
      while (f * b > a) --f;
      EXPECT(floor_div(a, b) == f, "floor_div %ld %ld\n", (long)a, (long)b);
      EXPECT(ceil_div(a, b) == (f * b == a ? f : f + 1), "ceil_div %ld %ld\n", (long)a, (long)b);
    }
  // The division helpers on each of their paths: divisor 1, both operands in 32 bits, and
  // 64-bit operands on either side of 2^31 (checked against the plain C++ operators).
  {
    const int64_t big = int64_t(1) << 31;
    const int64_t as[] = {0, 1, 7, 1000003, big - 2, big - 1, big, big + 5, 3 * big + 17, int64_t(1) << 62};
    const int64_t bs[] = {1, 2, 3, 7, 64, 1000, big - 1, big, big + 3, int64_t(1) << 40};
    for (int64_t a : as)
      for (int64_t b : bs) {
        int64_t q, r;
        divmod_nonneg(a, b, &q, &r);
        EXPECT(q == a / b && r == a % b && div_nonneg(a, b) == a / b, "divmod_nonneg %ld %ld\n", (long)a, (long)b);
        EXPECT(floor_div(a, b) == a / b && floor_div(-a, b) == -(a / b) - (a % b != 0 ? 1 : 0),
               "floor_div %ld %ld (large)\n", (long)a, (long)b);
        EXPECT(ceil_div(a, b) == a / b + (a % b != 0 ? 1 : 0) && ceil_div(-a, b) == -(a / b),
               "ceil_div %ld %ld (large)\n", (long)a, (long)b);
      }
  }
  for (int64_t L = 1; L <= 9; ++L)
    for (int64_t K = 1; K <= 5; ++K)
      for (int64_t s = 1; s <= 3; ++s)
        for (int64_t d = 1; d <= 3; ++d)
          for (int64_t pad = 0; pad <= d * (K - 1) + 2; ++pad)
            for (int64_t Lout = 1; Lout <= 12; ++Lout) {
              for (int64_t o = 0; o < Lout; ++o) {
                int64_t lo, hi;
                tap_range_padded(o, L, K, s, d, pad, &lo, &hi);
                for (int64_t k = 0; k < K; ++k) {
                  const int64_t i = o * s + k * d - pad;
                  EXPECT((0 <= i && i < L) == (lo <= k && k <= hi),
                         "tap_range_padded L=%ld K=%ld s=%ld d=%ld pad=%ld o=%ld k=%ld\n", (long)L,
                         (long)K, (long)s, (long)d, (long)pad, (long)o, (long)k);
                  ++checks;
                }
              }
              for (int64_t k = 0; k < K; ++k) {
                int64_t olo, ohi;
                tap_output_range_padded(k, L, Lout, s, d, pad, &olo, &ohi);
                for (int64_t o = 0; o < Lout; ++o) {
                  const int64_t i = o * s + k * d - pad;
                  EXPECT((0 <= i && i < L) == (olo <= o && o <= ohi),
                         "tap_output_range_padded L=%ld K=%ld s=%ld d=%ld pad=%ld k=%ld o=%ld\n",
                         (long)L, (long)K, (long)s, (long)d, (long)pad, (long)k, (long)o);
                  ++checks;
                }
              }
            }
  std::printf("%ld checks, %d failures\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
