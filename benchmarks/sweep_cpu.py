"""CPU sweep: fullconv against the padded reference on seeded random problems, to find the
shapes where it falls behind (the suite in bench_cpu.py times chosen layers; this one draws
1-D/2-D/3-D problems of every kind: groups and depthwise, strides, dilation, 1-tap to 7-tap
kernels, batch 1 to 16, float32/float64/bfloat16, NCHW and channels-last inputs).

Per problem, forward and forward+backward (grads of input, weight and bias) of
fullconv.full_convNd against F.convNd(padding=dilation*(k-1)) on the same tensors, measured
side by side: calls alternate (order reversed every other round) and the minimum of each is
kept (this VM's medians drift with page faults; minima compare the code). Each problem is
checked against the reference first. Prints one row per problem (ratio > 1: fullconv faster),
the worst problems, the geometric means; writes the rows as JSON.

    python benchmarks/sweep_cpu.py [--seed 1] [--problems 50] [--budget 0.4] [--threads N]
                                   [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fullconv  # noqa: E402
from timing import save_results  # noqa: E402

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
FULL = {1: fullconv.full_conv1d, 2: fullconv.full_conv2d, 3: fullconv.full_conv3d}
MAX_MACS = 3e9  # batch reduced until a problem's padded forward is at most this many multiply-adds


def draw(rng: random.Random):
    """One random problem: (nd, batch, cin, cout, kernel, stride, dilation, groups, size, dtype,
    channels_last)."""
    nd = rng.choice([1, 2, 2, 2, 3])
    g = rng.choice([1, 1, 1, 2, 4, "depthwise"])
    if g == "depthwise":
        cin = rng.choice([16, 32, 64, 128, 256])
        g, cout = cin, cin * rng.choice([1, 1, 2])
    else:
        cin = rng.choice([3, 8, 16, 32, 64, 128, 256])
        if cin % g:
            g = 1
        cout = rng.choice([8, 16, 32, 64, 128, 256])
        cout = max(g, cout - cout % g)
    k = rng.choice([1, 2, 3, 3, 3, 5, 7]) if nd < 3 else rng.choice([1, 3, 3])
    s, d = rng.choice([1, 1, 1, 2]), rng.choice([1, 1, 1, 2])
    size = {1: rng.choice([64, 256, 1000]), 2: rng.choice([7, 14, 28, 56]), 3: rng.choice([4, 8, 16])}[nd]
    n = rng.choice([1, 2, 8, 16])
    dtype = rng.choice([torch.float32] * 4 + [torch.float64, torch.bfloat16])
    channels_last = nd > 1 and rng.random() < 0.25
    macs = n * cin * cout // g * k ** nd * size ** nd / s ** nd  # (about)
    if macs > MAX_MACS:
        n = max(1, int(n * MAX_MACS / macs))
    return nd, n, cin, cout, k, s, d, g, size, dtype, channels_last


def side_by_side_min(fa, fb, budget):
    """Minimum seconds of fa and fb, their calls alternating for about `budget` seconds."""
    fa(), fb()
    t = time.perf_counter()
    fa(), fb()
    reps = max(3, min(50, int(budget / max(time.perf_counter() - t, 1e-6))))
    a, b = [], []
    for r in range(reps):
        for f, out in ((fa, a), (fb, b)) if r % 2 == 0 else ((fb, b), (fa, a)):
            t = time.perf_counter()
            f()
            out.append(time.perf_counter() - t)
    return min(a), min(b)


def run(problem, budget):
    nd, n, cin, cout, k, s, d, g, size, dtype, cl = problem
    x = torch.randn(n, cin, *(size,) * nd, dtype=dtype)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last if nd == 2 else torch.channels_last_3d)
    w = torch.randn(cout, cin // g, *(k,) * nd, dtype=dtype) / math.sqrt(cin // g * k ** nd)
    b = torch.randn(cout, dtype=dtype)
    p = d * (k - 1)
    got = FULL[nd](x, w, b, s, d, g)
    want = CONV[nd](x.double(), w.double(), b.double(), s, p, d, g)
    tol = 3e-2 if dtype == torch.bfloat16 else 1e-3
    scale = max(want.abs().max().item(), 1.0)
    assert (got.double() - want).abs().max().item() <= tol * scale, f"wrong result: {describe(problem)}"
    fc, ref = side_by_side_min(lambda: FULL[nd](x, w, b, s, d, g), lambda: CONV[nd](x, w, b, s, p, d, g), budget)
    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
    fcb, refb = side_by_side_min(
        lambda: torch.autograd.grad(FULL[nd](xg, wg, bg, s, d, g).sum(), (xg, wg, bg)),
        lambda: torch.autograd.grad(CONV[nd](xg, wg, bg, s, p, d, g).sum(), (xg, wg, bg)), budget)
    return {"problem": describe(problem), "nd": nd, "batch": n, "in_channels": cin, "out_channels": cout,
            "kernel": k, "stride": s, "dilation": d, "groups": g, "size": size, "dtype": str(dtype)[6:],
            "channels_last": cl, "fullconv_s": {"forward": fc, "forward+backward": fcb},
            "padded_s": {"forward": ref, "forward+backward": refb},
            "ratio": {"forward": ref / fc, "forward+backward": refb / fcb}}


def describe(problem):
    nd, n, cin, cout, k, s, d, g, size, dtype, cl = problem
    return (f"{nd}-D batch {n} {cin}->{cout} k{k} s{s} d{d} g{g} size {size} {str(dtype)[6:]}"
            f"{' channels-last' if cl else ''}")


def geomean(values):
    return math.exp(statistics.mean(math.log(v) for v in values))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--problems", type=int, default=50)
    ap.add_argument("--budget", type=float, default=0.4, help="seconds of timing per problem and mode")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    print(f"# fullconv vs F.convNd(padding=d*(k-1)), {args.problems} problems of seed {args.seed}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}; minima of alternating calls")
    print(f"{'forward':>8} {'fwd+bwd':>8}  {'fullconv ms':>11} {'fwd+bwd ms':>10}  problem")
    rows = []
    for _ in range(args.problems):
        row = run(draw(rng), args.budget)
        rows.append(row)
        print(f"{row['ratio']['forward']:7.2f}x {row['ratio']['forward+backward']:7.2f}x  "
              f"{row['fullconv_s']['forward'] * 1e3:11.3f} {row['fullconv_s']['forward+backward'] * 1e3:10.3f}  "
              f"{row['problem']}", flush=True)
    summary = {m: {"geomean": geomean([r["ratio"][m] for r in rows]), "min": min(r["ratio"][m] for r in rows),
                   "below_0.9": sum(r["ratio"][m] < 0.9 for r in rows)} for m in ("forward", "forward+backward")}
    print("\nworst forward ratios:")
    for r in sorted(rows, key=lambda r: r["ratio"]["forward"])[:8]:
        print(f"  {r['ratio']['forward']:5.2f}x  {r['problem']}")
    for m, v in summary.items():
        print(f"{m}: geometric mean {v['geomean']:.2f}x, min {v['min']:.2f}x, {v['below_0.9']} of {len(rows)} "
              "below 0.9x")
    save_results(args.out, f"sweep-cpu-seed{args.seed}", f"{platform.machine()}-{torch.get_num_threads()}t", False,
                 {"torch": torch.__version__, "threads": torch.get_num_threads(), "seed": args.seed,
                  "cpu_capability": torch.backends.cpu.get_cpu_capability(), "summary": summary, "rows": rows})


if __name__ == "__main__":
    main()
