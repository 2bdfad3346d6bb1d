"""The blocked CPU kernels' register tiles, side by side: default (four vectors of output
channels on AVX-512 for groups of at least three vectors) against the two-vector tiles
(FULLCONV_CPU_BLOCKED_TILE=narrow) and oneDNN (F.convNd(padding=d*(k-1)), or for --pass
grad_weight ATen's convolution_backward with the same mask), per 2-D layer of the CPU
benchmark's suite. Each layer: one warm-up call per variant, then `--rounds` rounds of one
call each, the variants' order reversed every other round; medians per variant. One call at a
time (not torch.utils.benchmark's repeated blocks), so an allocator or clock state that one
variant leaves behind falls on the next call of every variant alike.

    python benchmarks/cpu_tile_widths.py [--pass forward|grad_weight] [--threads N] [--rounds R] [--quick]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fullconv  # noqa: E402
from bench_cpu import suite  # noqa: E402
from timing import WithEnv  # noqa: E402

VARIANTS = ("default", "narrow", "oneDNN")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--quick", action="store_true", help="the CPU benchmark's quick suite")
    ap.add_argument("--pass", dest="which", choices=["forward", "grad_weight"], default="forward")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# blocked {args.which} tiles, torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds")
    print(f"{'layer':<24}{'cout/g':>7}{'default ms':>12}{'narrow ms':>11}{'narrow/default':>16}{'oneDNN/default':>16}")
    ratios = []
    for name, nd, n, cin, cout, k, s, d, g, size in suite(args.quick):
        if nd != 2:
            continue
        x = torch.randn(n, cin, size, size)
        w = torch.randn(cout, cin // g, k, k) / (cin // g * k * k) ** 0.5
        b = torch.randn(cout)
        if args.which == "forward":
            full = lambda: fullconv.full_conv2d(x, w, b, s, d, g)  # noqa: E731
            padded = lambda: F.conv2d(x, w, b, s, d * (k - 1), d, g)  # noqa: E731
        else:
            gy = torch.randn_like(fullconv.full_conv2d(x, w, b, s, d, g))
            mask = [False, True, False]
            full = lambda: torch.ops.fullconv.full_conv_backward(gy, x, w, [s] * 2, [d] * 2, g, mask)  # noqa: E731
            padded = lambda: torch.ops.aten.convolution_backward(  # noqa: E731
                gy, x, w, None, [s] * 2, [d * (k - 1)] * 2, [d] * 2, False, [0, 0], g, mask)
        fns = {"default": WithEnv({"FULLCONV_CPU_BLOCKED_TILE": "auto"}, full),
               "narrow": WithEnv({"FULLCONV_CPU_BLOCKED_TILE": "narrow"}, full), "oneDNN": padded}
        times = {v: [] for v in VARIANTS}
        for r in range(args.rounds + 1):
            for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
                t0 = time.perf_counter()
                fns[v]()
                if r > 0:  # (round 0 warms up)
                    times[v].append(time.perf_counter() - t0)
        med = {v: sorted(ts)[len(ts) // 2] for v, ts in times.items()}
        ratios.append((cout // g, med["narrow"] / med["default"]))
        print(f"{name:<24}{cout // g:>7}{med['default'] * 1e3:>12.2f}{med['narrow'] * 1e3:>11.2f}"
              f"{med['narrow'] / med['default']:>16.2f}{med['oneDNN'] / med['default']:>16.2f}", flush=True)
    for label, xs in (("every layer", [r for _, r in ratios]),
                      ("layers of >= 48 output channels per group (where the tiles differ on AVX-512)",
                       [r for c, r in ratios if c >= 48])):
        if xs:
            print(f"narrow/default, {label}: geomean {math.exp(sum(map(math.log, xs)) / len(xs)):.2f}x "
                  f"(min {min(xs):.2f}, max {max(xs):.2f})")

if __name__ == "__main__":
    main()
