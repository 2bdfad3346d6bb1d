"""CPU benchmark: fullconv vs padded S-Conv baselines, side by side in one run.

Variants per shape (all compute the same full convolution, except same-padding):
  fullconv   fullconv.full_convNd (no padded tensor, no zero taps)
  padded     F.convNd(padding=d*(k-1))            (oneDNN / native)
  pad+conv   F.pad(x, d*(k-1)) then F.convNd(padding=0)
  same       F.convNd(padding=d*(k-1)//2)          (a smaller output; context only)
Modes: forward, and forward+backward (grad of input, weight and bias).
Reported: median time (min-max), useful GFLOP/s (2 * multiply-adds of real, non-padding
products), and ratios baseline/fullconv (> 1: fullconv faster).

    python benchmarks/bench_cpu.py [--quick] [--threads N] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys

import torch
import torch.nn.functional as F
from torch.utils import benchmark

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fullconv  # noqa: E402
import shapes  # noqa: E402

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
FULL = {1: fullconv.full_conv1d, 2: fullconv.full_conv2d, 3: fullconv.full_conv3d}


def suite(quick: bool):
    # (name, nd, batch, cin, cout, kernel, stride, dilation, groups, spatial size)
    cases = []
    # F-Conv ResNet-18 at 64x64, batch 16: every distinct layer, or in quick mode one per
    # distinct (channels, stride)
    seen = set()
    for layer in shapes.unique(shapes.resnet18_full_layers(size=64, batch=16)):
        key = (layer[3], layer[4], layer[5], layer[6])
        if quick and key in seen:
            continue
        seen.add(key)
        cases.append(layer)
    cases += shapes.red_green_layers(batch=200)  # Red-Green network (Table 1)
    cases += [
        ("k5 64->64", 2, 16, 64, 64, 5, 1, 1, 1, 32),
        ("k7 32->32", 2, 16, 32, 32, 7, 1, 1, 1, 32),
        ("dilation 2 64->64", 2, 16, 64, 64, 3, 1, 2, 1, 32),
        ("depthwise 128 3x3", 2, 16, 128, 128, 3, 1, 1, 128, 32),
        ("batch 1 256->256", 2, 1, 256, 256, 3, 1, 1, 1, 14),
        ("1-D 64->64 k5", 1, 16, 64, 64, 5, 1, 1, 1, 1024),
        ("3-D 32->32 3x3x3", 3, 2, 32, 32, 3, 1, 1, 1, 16),
    ]
    return cases


def measure(stmt, env, min_time):
    # Timer runs with ONE thread unless told otherwise
    m = benchmark.Timer(stmt, globals=env, num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=min_time)
    return {"median": m.median, "min": min(m.times), "max": max(m.times)}


def run_case(case, min_time):
    name, nd, n, cin, cout, k, s, d, g, L = case
    x = torch.randn(n, cin, *(L,) * nd)
    w = torch.randn(cout, cin // g, *(k,) * nd) / math.sqrt(cin // g * k ** nd)
    b = torch.randn(cout)
    p = d * (k - 1)
    env = dict(F=F, fc=FULL[nd], conv=CONV[nd], x=x, w=w, b=b, s=s, d=d, g=g, p=p,
               same=p // 2, pads=(p,) * (2 * nd))
    fwd = {
        "fullconv": "fc(x, w, b, s, d, g)",
        "padded": "conv(x, w, b, s, p, d, g)",
        "pad+conv": "conv(F.pad(x, pads), w, b, s, 0, d, g)",
        "same": "conv(x, w, b, s, same, d, g)",
    }
    # correctness guard: the benchmark refuses to time a wrong answer
    torch.testing.assert_close(FULL[nd](x, w, b, s, d, g), CONV[nd](x, w, b, s, p, d, g),
                               rtol=1e-3, atol=1e-3)
    res = {"forward": {}, "forward+backward": {}}
    for v, stmt in fwd.items():
        res["forward"][v] = measure(stmt, env, min_time)
    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
    env.update(x=xg, w=wg, b=bg)
    for v, stmt in fwd.items():
        res["forward+backward"][v] = measure(
            f"torch.autograd.grad({stmt}.sum(), (x, w, b))", dict(env, torch=torch), min_time)
    macs = shapes.useful_macs(nd, n, cin, cout, k, s, d, g, L)
    return {"name": name, "nd": nd, "batch": n, "in_channels": cin, "out_channels": cout,
            "kernel": k, "stride": s, "dilation": d, "groups": g, "size": L,
            "useful_gflop_forward": 2 * macs / 1e9, "times_s": res}


def geomean(xs):
    return math.exp(sum(math.log(v) for v in xs) / len(xs)) if xs else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer shapes, shorter timing")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--min-time", type=float, default=None, help="seconds per measurement")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    min_time = args.min_time or (0.1 if args.quick else 0.3)
    env = {"machine": platform.machine(), "processor": platform.processor(),
           "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "mkldnn": torch.backends.mkldnn.is_available(),
           "date": datetime.datetime.now().isoformat(timespec="seconds")}
    print(f"# fullconv CPU benchmark: torch {env['torch']}, {env['machine']}, "
          f"{env['threads']} threads, oneDNN {env['mkldnn']}")
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(it, **_):
            return it
    cases = suite(args.quick)
    results = [run_case(c, min_time) for c in tqdm(cases, desc="shapes", file=sys.stderr)]
    hdr = (f"{'shape':<26}{'mode':<8}{'fullconv ms':>12}{'GFLOP/s':>9}"
           f"{'padded/fc':>10}{'pad+conv/fc':>12}{'same/fc':>9}")
    print(hdr)
    print("-" * len(hdr))
    summary = {}
    for mode, tag, flop_mul in (("forward", "fwd", 1), ("forward+backward", "fwd+bwd", 3)):
        ratios = {"padded": [], "pad+conv": [], "same": []}
        for r in results:
            t = r["times_s"][mode]
            fc = t["fullconv"]["median"]
            row = {v: t[v]["median"] / fc for v in ratios}
            for v in ratios:
                ratios[v].append(row[v])
            r.setdefault("ratios", {})[mode] = row
            gflops = flop_mul * r["useful_gflop_forward"] / fc
            r.setdefault("useful_gflops", {})[mode] = gflops
            print(f"{r['name']:<26}{tag:<8}{fc * 1e3:>12.3f}{gflops:>9.1f}"
                  f"{row['padded']:>10.2f}{row['pad+conv']:>12.2f}{row['same']:>9.2f}")
        summary[mode] = {v: {"geomean": geomean(xs), "min": min(xs), "max": max(xs)}
                         for v, xs in ratios.items()}
    print()
    for mode, s in summary.items():
        print(f"{mode:<18} ratio vs padded F.conv: geomean {s['padded']['geomean']:.2f}x "
              f"(min {s['padded']['min']:.2f}, max {s['padded']['max']:.2f}); vs F.pad+conv: "
              f"geomean {s['pad+conv']['geomean']:.2f}x")
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.date.today().isoformat()
    path = os.path.join(args.out, f"cpu-{env['machine']}-{env['threads']}t{'-quick' if args.quick else ''}-{stamp}.json")
    with open(path, "w") as f:
        json.dump({"environment": env, "quick": args.quick, "summary": summary,
                   "results": results}, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
