// Host emulation of the tiled CUDA kernels (csrc/cuda/implicit_gemm_kernels.cuh): the same
// views (csrc/implicit_gemm.h), the same block decomposition into BM x BN tiles, the same
// tap-major reduction chunks and tile-level tap skipping, the same split-K partition — with
// scalar double arithmetic instead of warps. Compared against full convolution written out
// from its definition (i = o*s + k*d - p), for random 1-D/2-D/3-D problems with stride,
// dilation and groups, at the kernels' real tile sizes and at small ones (partial tiles).
// Also checks that every skipped chunk truly meets only padding and that every output
// element is written exactly once.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "conv_reference.h"
#include "implicit_gemm.h"
#include "expect.h"

using namespace fullconv;
using namespace fullconv::igemm;


struct Tile { int64_t bm, bn, bk; };

static long chunks_run = 0, chunks_skipped = 0, flat_runs = 0, flat_weight_runs = 0, walks_stepped = 0, long_walks = 0, flat_walked = 0,
            split_checked = 0, table_entries_checked = 0;

// One ImageGemm pass, emulated block by block. packed: [g][tap][red][cols].
static void run_image_gemm(const ImageGemm& v, const Tile& t, const std::vector<double>& src,
                           const std::vector<double>& packed, std::vector<double>& dst,
                           std::vector<int>& writes) {
  const int64_t cpt = chunks_per_tap(v, t.bk);
  const bool flat = flat_reduction(v, t.bk);
  for (int64_t g = 0; g < v.groups; ++g)
    for (int64_t m0 = 0; m0 < v.rows; m0 += t.bm)
      for (int64_t j0 = 0; j0 < v.cols; j0 += t.bn) {
        const int64_t m1 = m0 + t.bm < v.rows ? m0 + t.bm : v.rows;
        int64_t pmin[3], pmax[3];
        row_box(v, m0, m1, pmin, pmax);
        std::vector<double> acc(t.bm * t.bn, 0.0);
        long_walks += !live_taps_walkable(v);
        if (live_taps_walkable(v)) {  // the kernels' walk over the live taps gives next_live_tap's sequence
          LiveTaps walk;
          int64_t off[3], want_off[3];
          first_live_tap(v, pmin, pmax, &walk, off);
          int64_t want = next_live_tap(v, 0, pmin, pmax, want_off);
          for (int steps = 0;; ++steps) {
            EXPECT(walk.tap == want, "live tap walk: tap %ld, next_live_tap %ld\n", (long)walk.tap, (long)want);
            if (walk.tap != want || want >= v.taps || steps > v.taps) break;
            EXPECT(off[0] == want_off[0] && off[1] == want_off[1] && off[2] == want_off[2],
                   "live tap walk: offsets of tap %ld\n", (long)want);
            ++walks_stepped;
            next_live_tap(v, pmin, pmax, &walk, off);
            want = next_live_tap(v, want + 1, pmin, pmax, want_off);
          }
        }
        if (tap_offsets_fit_int32(v)) {  // the channels-last kernels' tap table: entry t is live exactly at next_live_tap's taps
          int64_t want_off[3];
          int64_t want = next_live_tap(v, 0, pmin, pmax, want_off);
          for (int64_t tap = 0; tap < v.taps; ++tap) {
            const TapCL e = tap_entry_channels_last(v, tap, pmin, pmax);
            EXPECT(bool(e.live) == (tap == want), "tap table: tap %ld live %d, next_live_tap %ld\n", (long)tap,
                   int(e.live), (long)want);
            if (tap != want) continue;
            EXPECT(e.off[0] == want_off[0] && e.off[1] == want_off[1] && e.off[2] == want_off[2] &&
                       e.delta == src_tap_delta_channels_last(v, want_off),
                   "tap table: offsets of tap %ld\n", (long)tap);
            ++table_entries_checked;
            want = next_live_tap(v, tap + 1, pmin, pmax, want_off);
          }
        }
        if (flat) {  // chunks span several taps; no chunk skipped
          ++flat_runs;
          // the kernels' walk over a thread's flat indices gives flat_src_offset's offsets
          for (int64_t m = m0; m < m1; m += 7) {
            int64_t n, p[3];
            decode_row(v, m, &n, p);
            for (int64_t start = 0; start < 6; ++start)
              for (int64_t step : {int64_t(1), int64_t(2), int64_t(3), int64_t(8)}) {
                FlatWalk walk;
                flat_walk_start(v, start, &walk);
                for (int64_t r = start; r < v.taps * v.red + 2 * step; r += step) {
                  if (r > start) flat_walk_step(v, step, &walk);
                  EXPECT(flat_walk_offset(v, walk, n, p, g) == flat_src_offset(v, n, p, r, g),
                         "flat walk r=%ld step %ld\n", (long)r, (long)step);
                  ++flat_walked;
                }
              }
          }
          for (int64_t chunk = 0; chunk < flat_chunks(v, t.bk); ++chunk)
            for (int64_t m = m0; m < m1; ++m) {
              int64_t n, p[3];
              decode_row(v, m, &n, p);
              for (int64_t r = chunk * t.bk; r < (chunk + 1) * t.bk; ++r) {
                const int64_t off = flat_src_offset(v, n, p, r, g);
                if (off < 0) continue;
                for (int64_t j = j0; j < j0 + t.bn && j < v.cols; ++j)
                  acc[(m - m0) * t.bn + (j - j0)] += src[off] * packed[b_offset(v, g, r / v.red, r % v.red, j)];
              }
            }
        }
        for (int64_t chunk = 0; !flat && chunk < v.taps * cpt; ++chunk) {
          const int64_t tap = chunk / cpt, c0 = (chunk % cpt) * t.bk;
          int64_t off[3];
          const bool class_tap = tap_offsets(v, tap, off);
          const bool live = class_tap && tap_live_in_box(v, off, pmin, pmax);
          if (!live) {
            ++chunks_skipped;
            // the skip must be conservative: no row of the tile reads real input via this tap
            if (class_tap)
              for (int64_t m = m0; m < m1; ++m) {
                int64_t n, p[3];
                decode_row(v, m, &n, p);
                EXPECT(src_offset(v, n, p, off, g) < 0, "skipped a live tap %ld at row %ld\n", (long)tap, (long)m);
              }
            continue;
          }
          ++chunks_run;
          for (int64_t m = m0; m < m1; ++m) {
            int64_t n, p[3];
            decode_row(v, m, &n, p);
            const int64_t base = src_offset(v, n, p, off, g);
            if (c0 == 0) {  // the channels-last kernels' split offset: row part + tap part
              const SrcRowCL row = src_row_channels_last(v, n, p, g);
              if (tap_offsets_fit_int32(v)) {  // through the tap table's entry
                EXPECT(src_offset_channels_last(v, row, tap_entry_channels_last(v, tap, pmin, pmax)) ==
                           src_offset_channels_last(v, n, p, off, g),
                       "split channels-last offset: tap %ld row %ld\n", (long)tap, (long)m);
                ++split_checked;
              }
            }
            for (int64_t c = c0; c < c0 + t.bk && c < v.red; ++c) {
              const double a = base >= 0 ? src[base + c * v.src_spatial] : 0.0;
              for (int64_t j = j0; j < j0 + t.bn && j < v.cols; ++j)
                acc[(m - m0) * t.bn + (j - j0)] += a * packed[b_offset(v, g, tap, c, j)];
            }
          }
        }
        for (int64_t m = m0; m < m1; ++m) {
          int64_t n, p[3];
          decode_row(v, m, &n, p);
          const int64_t base = dst_offset(v, n, p, g);
          for (int64_t j = j0; j < j0 + t.bn && j < v.cols; ++j) {
            dst[base + j * v.dst_spatial] = acc[(m - m0) * t.bn + (j - j0)];
            writes[base + j * v.dst_spatial] += 1;
          }
        }
      }
}

// The forward's row regions: rows run region by region, each region's rows batch-major over
// a box of positions inside its segments, and a dim's interior segment holds exactly the
// positions at which every tap reads input along that dim.
static void check_regions(const ImageGemm& v) {
  int64_t prev_index = -1;
  for (int64_t m = 0; m < v.rows; ++m) {
    int64_t n, p[3];
    decode_row(v, m, &n, p);
    EXPECT(n >= 0 && n < v.batch, "row %ld batch %ld\n", (long)m, (long)n);
    if (!v.regions) continue;
    const RowRegion R = row_region(v, m);
    int want = 0;  // the last region starting at or before m, by a plain pass
    for (int r = 1; r < kRegions; ++r)
      if (v.region_first[r] <= m) want = r;
    EXPECT(R.index == want && R.first == v.region_first[want], "row %ld: region %d, want %d\n", (long)m, R.index, want);
    EXPECT(R.index >= prev_index && m >= R.first, "regions out of order at row %ld\n", (long)m);
    prev_index = R.index;
    const int seg[3] = {R.index / 9, (R.index / 3) % 3, R.index % 3};
    for (int i = 0; i < 3; ++i) {
      EXPECT(p[i] >= R.lo[i] && p[i] < R.lo[i] + R.ext[i], "row %ld outside its region\n", (long)m);
      bool all_taps = true;
      for (int64_t k = 0; k < v.kernel[i]; ++k) {
        const int64_t q = p[i] * v.src_mul[i] + (v.tap_base[i] - k * v.tap_step[i]);
        all_taps = all_taps && q >= 0 && q < v.src_size[i];
      }
      EXPECT(all_taps == (seg[i] == 1), "dim %d position %ld in segment %d\n", i, (long)p[i], seg[i]);
    }
  }
}

// The weight gradient: tiles of (rows co) x (cols ci) per (group, tap), split-K slices summed
// in slice order like the reduce kernel.
static void run_weight_gemm(const WeightGemm& v, const Tile& t, const std::vector<double>& gy,
                            const std::vector<double>& x, std::vector<double>& gw, std::vector<int>& writes) {
  const ConvShape& s = v.s;
  flat_weight_runs += v.flat;
  std::vector<double> partial(v.splits * v.groups * v.taps * v.rows * v.cols, 0.0);
  for (int64_t gt = 0; gt < v.groups * v.taps; ++gt) {
    const int64_t g = gt / v.taps, tap = gt % v.taps;
    int64_t lo[3], ext[3], shift[3];
    const int64_t len = tap_box(v, tap, lo, ext, shift);
    for (int64_t slice = 0; slice < v.splits; ++slice) {
      int64_t c0, c1;
      slice_chunks(len, t.bk, v.splits, slice, &c0, &c1);
      for (int64_t m0 = 0; m0 < v.rows; m0 += t.bm)
        for (int64_t j0 = 0; j0 < v.cols; j0 += t.bn)
          for (int64_t chunk = c0; chunk < c1; ++chunk)
            for (int64_t e = chunk * t.bk; e < (chunk + 1) * t.bk && e < len; ++e) {
              int64_t of, inf;
              const ReductionPos pos = decode_reduction_pos(e, ext);
              const int64_t n = pos.n;
              reduction_offsets(v, pos, lo, shift, &of, &inf);
              for (int64_t m = m0; m < m0 + t.bm && m < v.rows; ++m)
                for (int64_t j = j0; j < j0 + t.bn && j < v.cols; ++j) {
                  // flat: the column's own input position, none where it is padding
                  const int64_t xo = v.flat ? flat_x_offset(v, pos, flat_column(v, j), g)
                                            : (n * s.in_channels + g * v.cols + j) * s.in_spatial() + inf;
                  if (xo < 0) continue;
                  partial[partial_offset(v, slice, gt, m, j)] +=
                      gy[(n * s.out_channels + g * v.rows + m) * s.out_spatial() + of] * x[xo];
                }
            }
    }
    for (int64_t m = 0; m < v.rows; ++m)
      for (int64_t j = 0; j < v.cols; ++j) {
        double sum = 0.0;
        for (int64_t slice = 0; slice < v.splits; ++slice) sum += partial[partial_offset(v, slice, gt, m, j)];
        gw[weight_offset(v, g, m, j, tap)] = sum;
        writes[weight_offset(v, g, m, j, tap)] += 1;
      }
  }
}

static double max_err(const std::vector<double>& a, const std::vector<double>& b) {
  double e = 0.0;
  for (size_t i = 0; i < a.size(); ++i) e = std::fmax(e, std::fabs(a[i] - b[i]));
  return e;
}

static bool all_once(const std::vector<int>& writes) {
  for (int w : writes)
    if (w != 1) return false;
  return true;
}

int main() {
  std::mt19937 rng(1234);
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::normal_distribution<double> normal;
  const Tile tiles[] = {{128, 64, 32}, {128, 64, 16}, {64, 64, 16}, {8, 4, 3}, {5, 3, 2}, {1, 1, 1}};
  long problems = 0;
  // trials 240..243: 1-D kernels longer than 64 taps (which the CUDA tiles leave to the direct
  // kernels: not walkable; the views themselves still hold)
  for (int trial = 0; trial < 244; ++trial) {
    Problem P;
    ConvShape& s = P.s;
    s.ndim = 1 + trial % 3;
    s.batch = uni(1, 3);
    s.groups = uni(1, 3);
    s.in_channels = s.groups * uni(1, 5);
    s.out_channels = s.groups * uni(1, 5);
    for (int d = 3 - s.ndim; d < 3; ++d) {
      s.in_size[d] = uni(1, s.ndim == 3 ? 5 : 9);
      s.kernel[d] = uni(1, s.ndim == 3 ? 3 : 5);
      s.stride[d] = uni(1, 3);
      s.dilation[d] = uni(1, 3);
    }
    if (trial >= 240) {
      s.ndim = 1;
      s.in_size[0] = s.in_size[1] = s.kernel[0] = s.kernel[1] = 1;
      s.stride[0] = s.stride[1] = s.dilation[0] = s.dilation[1] = 1;
      s.kernel[2] = uni(65, 80);
      s.in_size[2] = uni(1, 12);
    }
    s.compute_output_size();
    P.x.resize(s.batch * s.in_channels * s.in_spatial());
    P.w.resize(s.out_channels * s.in_channels_per_group() * s.kernel_volume());
    P.gy.resize(s.batch * s.out_channels * s.out_spatial());
    for (auto* vec : {&P.x, &P.w, &P.gy})
      for (auto& e : *vec) e = normal(rng);
    std::vector<double> y_ref, gx_ref, gw_ref;
    reference(P, y_ref, gx_ref, gw_ref);
    const int64_t cin_g = s.in_channels_per_group(), cout_g = s.out_channels_per_group(), taps = s.kernel_volume();
    // packed B operands: forward [g][tap][ci][co], grad_input [g][tap][co][ci]
    std::vector<double> wf(P.w.size()), wb(P.w.size());
    for (int64_t co = 0; co < s.out_channels; ++co)
      for (int64_t ci = 0; ci < cin_g; ++ci)
        for (int64_t k = 0; k < taps; ++k) {
          const int64_t g = co / cout_g, col = co % cout_g;
          const double val = P.w[(co * cin_g + ci) * taps + k];
          wf[((g * taps + k) * cin_g + ci) * cout_g + col] = val;
          wb[((g * taps + k) * cout_g + col) * cin_g + ci] = val;
        }
    ImageGemm fwd = forward_gemm(s);
    add_forward_regions(&fwd, s);
    check_regions(fwd);
    for (const Tile& t : tiles) {
      std::vector<double> y(y_ref.size(), NAN), gx(gx_ref.size(), NAN), gw(gw_ref.size(), NAN);
      std::vector<int> wy(y.size(), 0), wx(gx.size(), 0), ww(gw.size(), 0);
      run_image_gemm(forward_gemm(s, t.bk, true), t, P.x, wf, y, wy);
      for (int64_t cls = 0; cls < residue_classes(s); ++cls) run_image_gemm(grad_input_gemm(s, cls), t, P.gy, wb, gx, wx);
      // a small target so split-K engages on these small problems
      run_weight_gemm(weight_gemm(s, t.bm, t.bn, t.bk, 8 + trial % 64, 1, 1 << 20), t, P.gy, P.x, gw, ww);
      const double tol = 1e-9;
      EXPECT(all_once(wy) && max_err(y, y_ref) < tol, "forward trial %d tile %ldx%ldx%ld err %g\n", trial,
             (long)t.bm, (long)t.bn, (long)t.bk, max_err(y, y_ref));
      EXPECT(all_once(wx) && max_err(gx, gx_ref) < tol, "grad_input trial %d tile %ldx%ldx%ld err %g\n", trial,
             (long)t.bm, (long)t.bn, (long)t.bk, max_err(gx, gx_ref));
      EXPECT(all_once(ww) && max_err(gw, gw_ref) < tol, "grad_weight trial %d tile %ldx%ldx%ld err %g\n", trial,
             (long)t.bm, (long)t.bn, (long)t.bk, max_err(gw, gw_ref));
      ++problems;
    }
  }
  // Split-K partition: every chunk exactly once, in order, for any split count.
  for (int64_t len = 0; len < 70; ++len)
    for (int64_t bk = 1; bk < 9; ++bk)
      for (int64_t splits = 1; splits < 12; ++splits) {
        int64_t next = 0;
        for (int64_t sl = 0; sl < splits; ++sl) {
          int64_t c0, c1;
          slice_chunks(len, bk, splits, sl, &c0, &c1);
          EXPECT(c0 == next && c1 >= c0, "slice_chunks len=%ld bk=%ld splits=%ld\n", (long)len, (long)bk, (long)splits);
          next = c1;
        }
        EXPECT(next == (len + bk - 1) / bk, "slice_chunks total len=%ld\n", (long)len);
      }
  // Stepping a reduction position by addition agrees with decoding it.
  for (int trial = 0; trial < 2000; ++trial) {
    int64_t ext[3] = {uni(1, 4), uni(1, 5), uni(1, 7)};
    const int64_t vol = ext[0] * ext[1] * ext[2];
    int64_t e = uni(0, 3 * int(vol));
    ReductionPos r = decode_reduction_pos(e, ext);
    for (int k = 0; k < 6; ++k) {
      const int64_t step = uni(1, 40);
      advance_reduction_pos(&r, step, ext);
      e += step;
      const ReductionPos want = decode_reduction_pos(e, ext);
      EXPECT(r.n == want.n && r.q[0] == want.q[0] && r.q[1] == want.q[1] && r.q[2] == want.q[2],
             "advance_reduction_pos e=%ld ext=%ldx%ldx%ld\n", (long)e, (long)ext[0], (long)ext[1], (long)ext[2]);
    }
  }
  // The cursor of weight_gemm_cl_kernel (offsets carried by addition) agrees with
  // reduction_offsets at every step, on random grad_weight boxes of random layers.
  long cursor32_steps = 0;
  for (int trial = 0; trial < 600; ++trial) {
    ConvShape s;
    s.ndim = 3;
    s.batch = uni(1, 4);
    s.in_channels = 8 * uni(1, 3);
    s.out_channels = 8 * uni(1, 3);
    for (int i = 0; i < 3; ++i) {
      s.in_size[i] = uni(1, 14);
      s.kernel[i] = uni(1, 3);
      s.stride[i] = uni(1, 3);
      s.dilation[i] = uni(1, 2);
    }
    s.compute_output_size();
    const WeightGemm v = weight_gemm(s, 32, 32, 32, 1, 1, 1 << 30);
    if (v.flat) continue;
    const int64_t tap = uni(0, int(v.taps) - 1);
    int64_t lo[3], ext[3], shift[3];
    const int64_t len = tap_box(v, tap, lo, ext, shift);
    if (len == 0) continue;
    // the 32-bit cursor with per-tile constants (a fixed step, as the kernels take)
    int64_t e = uni(0, int(len) - 1);
    const int32_t step32 = uni(1, trial % 2 ? 8 : 40);
    const ReductionSteps k = reduction_steps(v, step32, ext);
    ReductionCursor32 c32 = reduction_cursor32(v, e, lo, ext, shift);
    for (; e + step32 < len; e += step32) {
      advance_reduction_cursor32(&c32, k);
      const ReductionCursor want = reduction_cursor(v, e + step32, lo, ext, shift);
      EXPECT(c32.gy == want.gy && c32.x == want.x && c32.n == want.pos.n && c32.q[0] == want.pos.q[0] &&
                 c32.q[1] == want.pos.q[1] && c32.q[2] == want.pos.q[2],
             "32-bit reduction cursor e=%ld step %d tap %ld\n", (long)(e + step32), int(step32), (long)tap);
      ++cursor32_steps;
    }
  }
  EXPECT(cursor32_steps > 1000, "32-bit reduction cursor barely stepped (%ld)\n", cursor32_steps);
  // Tile skipping must matter on a realistic layer: a 7x7 map, 3x3 kernel, 128-row tiles.
  {
    ConvShape s;
    s.ndim = 2; s.batch = 64; s.in_channels = s.out_channels = 512;
    s.in_size[1] = s.in_size[2] = 7; s.kernel[1] = s.kernel[2] = 3;
    s.compute_output_size();
    const ImageGemm v = forward_gemm(s, 32, true);
    long live = 0, total = 0;
    for (int64_t m0 = 0; m0 < v.rows; m0 += 128) {
      int64_t pmin[3], pmax[3], off[3];
      row_box(v, m0, m0 + 128, pmin, pmax);
      for (int64_t tap = 0; tap < v.taps; ++tap) {
        ++total;
        live += tap_offsets(v, tap, off) && tap_live_in_box(v, off, pmin, pmax);
      }
    }
    std::printf("7x7 3x3 forward, 128-row tiles: %ld of %ld tap chunks live\n", live, total);
    // a 128-row tile spans whole 9x9 images, so without row regions every tap would be live;
    // with them the border tiles (corners 4 live taps, edges 6, of 9) skip the rest
    EXPECT(v.regions && live * 100 < total * 85, "row regions skip border taps\n");
    const ImageGemm g = grad_input_gemm(s, 0);
    EXPECT(g.rows == 64 * 49 && g.src_size[1] == 9, "grad_input gemm geometry\n");
  }
  EXPECT(flat_runs > 0, "no tile ran the flat reduction\n");
  EXPECT(flat_walked > 0, "no flat index walked\n");
  EXPECT(split_checked > 0, "no split channels-last offset checked\n");
  EXPECT(table_entries_checked > 0, "no tap table entry checked\n");
  EXPECT(walks_stepped > 0 && long_walks > 0, "no live tap walked (%ld tiles of unwalkable kernels)\n", long_walks);
  EXPECT(flat_weight_runs > 0 && flat_weight_runs < problems, "grad_weight ran only one of its two forms\n");
  std::printf("%ld problem x tile runs (%ld tiles with a flat reduction, %ld flat grad_weights), %ld chunks run, "
              "%ld skipped, %ld live taps walked, %ld split offsets checked, %ld tap table entries checked, %d failures\n",
              problems, flat_runs, flat_weight_runs, chunks_run, chunks_skipped, walks_stepped, split_checked,
              table_entries_checked, failures);
  return failures == 0 ? 0 : 1;
}
