// Multiply-adds the tiled CUDA kernels issue per pass, counted with their own index math
// (csrc/implicit_gemm.h): the same tiles, tap-major chunks, tile-level tap skipping, grad_input
// residue classes and grad_weight tap boxes, so the count is what the tensor cores execute
// (zero-filled rows and channels of live chunks included). Used by tile_work.py.
// Input lines: nd batch cin cout kernel stride dilation groups size  (cubic kernels and sizes)
// Output lines: forward grad_input grad_weight  (multiply-adds, as doubles)
#include <cstdio>

#include "implicit_gemm.h"

using namespace fullconv;
using namespace fullconv::igemm;

static double image_macs(const ImageGemm& v, int64_t bm, int64_t bn, int64_t bk) {
  const double tile = double(bm) * double(bn) * double(bk);
  const int64_t col_tiles = (v.cols + bn - 1) / bn;
  double chunks = 0;
  for (int64_t m0 = 0; m0 < v.rows; m0 += bm) {
    if (flat_reduction(v, bk)) {
      chunks += double(flat_chunks(v, bk));
      continue;
    }
    int64_t pmin[kMaxSpatialDims], pmax[kMaxSpatialDims], off[kMaxSpatialDims];
    row_box(v, m0, m0 + bm, pmin, pmax);
    for (int64_t tap = next_live_tap(v, 0, pmin, pmax, off); tap < v.taps;
         tap = next_live_tap(v, tap + 1, pmin, pmax, off))
      chunks += double(chunks_per_tap(v, bk));
  }
  return chunks * tile * double(col_tiles) * double(v.groups);
}

int main(int argc, char** argv) {
  // tensor-core tiles (float16 / bfloat16): 128 x 64, BK 32 (grad_weight: weight_tile_rows() x 64)
  const int64_t bm = 128, bn = 64, bk = 32;
  long nd, n, cin, cout, k, st, d, g, L;
  while (std::scanf("%ld %ld %ld %ld %ld %ld %ld %ld %ld", &nd, &n, &cin, &cout, &k, &st, &d, &g, &L) == 9) {
    ConvShape s;
    s.ndim = static_cast<int>(nd);
    s.batch = n;
    s.in_channels = cin;
    s.out_channels = cout;
    s.groups = g;
    for (int i = 3 - s.ndim; i < 3; ++i) {
      s.in_size[i] = L;
      s.kernel[i] = k;
      s.stride[i] = st;
      s.dilation[i] = d;
    }
    s.compute_output_size();
    const double fwd = image_macs(forward_gemm(s, bk, true), bm, bn, bk);
    double gi = 0;
    for (int64_t cls = 0; cls < residue_classes(s); ++cls) gi += image_macs(grad_input_gemm(s, cls), bm, bn, bk);
    const int64_t wm = weight_tile_rows(s);
    const WeightGemm w = weight_gemm(s, wm, bn, bk, 1, 1, int64_t(1) << 40);
    double gw = 0;
    int64_t lo[kMaxSpatialDims], ext[kMaxSpatialDims], shift[kMaxSpatialDims];
    const double tiles = double((w.rows + wm - 1) / wm) * double((w.cols + bn - 1) / bn) * double(wm * bn);
    for (int64_t tap = 0; tap < w.taps; ++tap)
      gw += double((tap_box(w, tap, lo, ext, shift) + bk - 1) / bk) * double(bk) * tiles * double(w.groups);
    std::printf("%.0f %.0f %.0f\n", fwd, gi, gw);
  }
  return 0;
}
