"""CPU benchmark: fullconv vs padded S-Conv baselines, side by side in one run.

Variants per shape (all compute the same full convolution, except same-padding):
  fullconv   fullconv.full_convNd (no padded tensor, no zero taps)
  padded     F.convNd(padding=d*(k-1))            (oneDNN / native)
  pad+conv   F.pad(x, d*(k-1)) then F.convNd(padding=0)
  same       F.convNd(padding=d*(k-1)//2)          (a smaller output; context only)
Modes: forward, and forward+backward (grad of input, weight and bias).
Reported: median time (min-max), useful GFLOP/s (2 * multiply-adds of real, non-padding
products), and ratios baseline/fullconv (> 1: fullconv faster). Also measured in the same
run: the machine's sgemm GFLOP/s (torch.mm, the same threads) and the fraction of it that
fullconv reaches on 64-512-channel 3x3 layers; the peak memory of forward+backward for
fullconv and the padded reference (each in a fresh subprocess, high-water mark of the resident
set above the inputs); a train step of an F-Conv ResNet-18 (64x64, batch 16; fullconv.convert)
against the same network built the authors' way (nn.Conv2d(padding=k-1) + padded residuals).
The issue's targets are printed beside what was measured. --narrow-tiles also times fullconv
with FULLCONV_CPU_BLOCKED_TILE=narrow (the blocked forward's and grad_weight's two-vector
register tiles everywhere, instead of four vectors on AVX-512 for groups of 48+ float32 output
channels):
column narrow/fc, above 1 where the default is faster.

    python benchmarks/bench_cpu.py [--quick] [--threads N] [--no-memory] [--no-network]
                                   [--narrow-tiles] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys

import torch
import torch.nn.functional as F
from torch.utils import benchmark

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fullconv  # noqa: E402
import shapes  # noqa: E402
from timing import WithEnv, side_by_side, timer  # noqa: E402

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


def run_case(case, min_time, narrow=False, dtype=torch.float32):
    name, nd, n, cin, cout, k, s, d, g, L = case
    x = torch.randn(n, cin, *(L,) * nd).to(dtype)
    w = (torch.randn(cout, cin // g, *(k,) * nd) / math.sqrt(cin // g * k ** nd)).to(dtype)
    b = torch.randn(cout).to(dtype)
    p = d * (k - 1)
    env = dict(F=F, fc=FULL[nd], conv=CONV[nd], x=x, w=w, b=b, s=s, d=d, g=g, p=p,
               same=p // 2, pads=(p,) * (2 * nd))
    fwd = {
        "fullconv": "fc(x, w, b, s, d, g)",
        "padded": "conv(x, w, b, s, p, d, g)",
        "pad+conv": "conv(F.pad(x, pads), w, b, s, 0, d, g)",
        "same": "conv(x, w, b, s, same, d, g)",
    }
    if narrow:
        env["narrow"] = WithEnv({"FULLCONV_CPU_BLOCKED_TILE": "narrow"}, FULL[nd])
        fwd["fullconv-narrow"] = "narrow(x, w, b, s, d, g)"
    if dtype == torch.bfloat16:
        # the bfloat16 tiles against the float32 tiles on the same bfloat16 values
        env["f32tiles"] = WithEnv({"FULLCONV_CPU_BF16_TILES": "off"}, FULL[nd])
        fwd["fullconv-f32tiles"] = "f32tiles(x, w, b, s, d, g)"
    # correctness guard: the benchmark refuses to time a wrong answer (bfloat16: against the
    # float64 reference, relative to the output's scale)
    if dtype == torch.float32:
        torch.testing.assert_close(FULL[nd](x, w, b, s, d, g), CONV[nd](x, w, b, s, p, d, g),
                                   rtol=1e-3, atol=1e-3)
    else:
        got = FULL[nd](x, w, b, s, d, g).double()
        want = CONV[nd](x.double(), w.double(), b.double(), s, p, d, g)
        scale = max(want.abs().max().item(), 1.0)
        assert (got - want).abs().max().item() <= 3e-2 * scale, f"{name}: bfloat16 result off"
    res = {"forward": side_by_side({v: timer(stmt, env) for v, stmt in fwd.items()}, min_time)}
    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
    env.update(x=xg, w=wg, b=bg, torch=torch)
    res["forward+backward"] = side_by_side(
        {v: timer(f"torch.autograd.grad({stmt}.sum(), (x, w, b))", env) for v, stmt in fwd.items()}, min_time)
    macs = shapes.useful_macs(nd, n, cin, cout, k, s, d, g, L)
    return {"name": name, "nd": nd, "batch": n, "in_channels": cin, "out_channels": cout,
            "kernel": k, "stride": s, "dilation": d, "groups": g, "size": L,
            "useful_gflop_forward": 2 * macs / 1e9, "times_s": res}


def sgemm_gflops(min_time):
    """The machine's single-precision GEMM rate with the benchmark's threads (best of a few
    square and layer-like sizes)."""
    best = 0.0
    for m, k, n in ((1024, 1024, 1024), (2048, 2048, 2048), (512, 4608, 1600), (256, 2304, 6400)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        t = measure("torch.mm(a, b)", {"torch": torch, "a": a, "b": b}, min_time)["median"]
        best = max(best, 2 * m * k * n / t / 1e9)
    return best


_MEMORY_SCRIPT = r"""
import json, sys, torch
import torch.nn.functional as F
sys.path.insert(0, sys.argv[3])
import fullconv
torch.set_num_threads(int(sys.argv[2]))
name, nd, n, cin, cout, k, s, d, g, L = json.loads(sys.argv[1])
variant = sys.argv[4]
conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
full = {1: fullconv.full_conv1d, 2: fullconv.full_conv2d, 3: fullconv.full_conv3d}[nd]
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
def run(n, L):
    x = torch.randn(n, cin, *(L,) * nd, requires_grad=True)
    w = torch.randn(cout, cin // g, *(k,) * nd, requires_grad=True)
    b = torch.randn(cout, requires_grad=True)
    base = status("VmRSS:")
    open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark
    y = full(x, w, b, s, d, g) if variant == "fullconv" else conv(x, w, b, s, d * (k - 1), d, g)
    torch.autograd.grad(y.sum(), (x, w, b))
    return status("VmHWM:") - base
# warm-up on a tiny problem: thread pools and lazily initialised kernels are not the op's
# memory, and almost nothing is left in the allocator's cache for the measured run to reuse
run(1, 2)
print(json.dumps({"peak_bytes": run(n, L)}))
"""


# glibc serves large blocks with mmap only below a threshold that it raises after each free of
# a large block; freed memory then stays resident and VmHWM depends on allocation history
# (±40% run to run). A fixed threshold (which also turns the adjustment off) returns every
# large block to the system when freed, so the high-water mark is the live peak.
_MEMORY_ENV = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")


def peak_memory(case, threads):
    """Peak extra resident memory of one forward+backward, fullconv and padded reference,
    each measured in a fresh process (no allocator state shared between the two)."""
    out = {}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for variant in ("fullconv", "padded"):
        r = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, json.dumps(case), str(threads), root, variant],
                           capture_output=True, text=True, check=True, env=_MEMORY_ENV)
        out[variant] = json.loads(r.stdout.strip().splitlines()[-1])["peak_bytes"]
    return out


def resnet18_train_step(min_time, threads):
    """Train step of an F-Conv ResNet-18 (fullconv.convert) vs the authors' construction."""
    import bench_convert
    x = torch.randn(16, 3, 64, 64)
    y = torch.randint(0, 10, (16,))
    models = bench_convert.variants("resnet18")
    return bench_convert.measure({v: models[v] for v in ("fullconv (fused)", "authors (padded conv)")},
                                 x, y, True, min_time)


def geomean(xs):
    return math.exp(sum(math.log(v) for v in xs) / len(xs)) if xs else float("nan")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo; platform.processor() is often empty on Linux):
    ratios against oneDNN differ between CPUs of the same ISA."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_isa() -> list:
    """The vector extensions the blocked kernels choose between, as /proc/cpuinfo lists them."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return [x for x in ("avx2", "fma", "avx512f", "avx512_bf16") if x in flags]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer shapes, shorter timing")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--min-time", type=float, default=None, help="seconds per measurement")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--no-network", action="store_true", help="skip the ResNet-18 train step")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="the layers' dtype; bfloat16 also times the float32 tiles on the same values "
                         "(FULLCONV_CPU_BF16_TILES=off) and skips the memory and network parts")
    ap.add_argument("--narrow-tiles", action="store_true",
                    help="also time fullconv on the two-vector register tiles (FULLCONV_CPU_BLOCKED_TILE=narrow)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    min_time = args.min_time or (0.1 if args.quick else 0.3)
    env = {"machine": platform.machine(), "processor": platform.processor() or cpu_model(),
           "isa": cpu_isa(), "blocked_isa": os.environ.get("FULLCONV_CPU_BLOCKED_ISA", "auto"),
           "blocked_tile": os.environ.get("FULLCONV_CPU_BLOCKED_TILE", "auto"), "narrow_tiles_column": args.narrow_tiles,
           "dtype": args.dtype, "bf16_tiles": os.environ.get("FULLCONV_CPU_BF16_TILES", "auto"),
           "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "mkldnn": torch.backends.mkldnn.is_available(),
           "date": datetime.datetime.now().isoformat(timespec="seconds")}
    print(f"# fullconv CPU benchmark: torch {env['torch']}, {env['machine']} ({env['processor']}; "
          f"{', '.join(env['isa'])}), {env['threads']} threads, oneDNN {env['mkldnn']}")
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(it, **_):
            return it
    cases = suite(args.quick)
    dtype = getattr(torch, args.dtype)
    if dtype != torch.float32:
        args.no_memory = args.no_network = True
    results = [run_case(c, min_time, args.narrow_tiles, dtype) for c in tqdm(cases, desc="shapes", file=sys.stderr)]
    sgemm = sgemm_gflops(min_time)
    if not args.no_memory and sys.platform.startswith("linux"):
        for c, r in zip(tqdm(cases, desc="peak memory", file=sys.stderr), results):
            r["peak_memory_bytes"] = peak_memory(c, args.threads)
    network = None if args.no_network else resnet18_train_step(max(min_time, 1.0), args.threads)
    hdr = (f"{'shape':<26}{'mode':<8}{'fullconv ms':>12}{'GFLOP/s':>9}"
           f"{'padded/fc':>10}{'pad+conv/fc':>12}{'same/fc':>9}" + (f"{'narrow/fc':>11}" if args.narrow_tiles else "")
           + (f"{'f32tiles/fc':>13}" if dtype == torch.bfloat16 else ""))
    print(hdr)
    print("-" * len(hdr))
    summary = {}
    for mode, tag, flop_mul in (("forward", "fwd", 1), ("forward+backward", "fwd+bwd", 3)):
        ratios = {"padded": [], "pad+conv": [], "same": []}
        if args.narrow_tiles:
            ratios["fullconv-narrow"] = []
        if dtype == torch.bfloat16:
            ratios["fullconv-f32tiles"] = []
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
                  f"{row['padded']:>10.2f}{row['pad+conv']:>12.2f}{row['same']:>9.2f}"
                  + (f"{row['fullconv-narrow']:>11.2f}" if args.narrow_tiles else "")
                  + (f"{row['fullconv-f32tiles']:>13.2f}" if dtype == torch.bfloat16 else ""))
        summary[mode] = {v: {"geomean": geomean(xs), "min": min(xs), "max": max(xs)}
                         for v, xs in ratios.items()}
    print()
    for mode, s in summary.items():
        print(f"{mode:<18} ratio vs padded F.conv: geomean {s['padded']['geomean']:.2f}x "
              f"(min {s['padded']['min']:.2f}, max {s['padded']['max']:.2f}); vs F.pad+conv: "
              f"geomean {s['pad+conv']['geomean']:.2f}x" + (
                  f"; narrow tiles / default: geomean {s['fullconv-narrow']['geomean']:.2f}x (min "
                  f"{s['fullconv-narrow']['min']:.2f}, max {s['fullconv-narrow']['max']:.2f})"
                  if "fullconv-narrow" in s else "") + (
                  f"; float32 tiles / bfloat16 tiles: geomean {s['fullconv-f32tiles']['geomean']:.2f}x (min "
                  f"{s['fullconv-f32tiles']['min']:.2f}, max {s['fullconv-f32tiles']['max']:.2f})"
                  if "fullconv-f32tiles" in s else ""))
    # (the sgemm fraction compares float32 layers with float32 sgemm only)
    wide = [r for r in results if r["kernel"] == 3 and r["groups"] == 1 and r["nd"] == 2
            and 64 <= r["in_channels"] <= 512 and 64 <= r["out_channels"] <= 512] if dtype == torch.float32 else []
    wide_fraction = [r["useful_gflops"]["forward"] / sgemm for r in wide]
    print(f"sgemm (torch.mm, {env['threads']} threads): {sgemm:.1f} GFLOP/s; fullconv forward on "
          f"64-512-channel 3x3 layers: {min(wide_fraction):.0%}-{max(wide_fraction):.0%} of it "
          f"(median {sorted(wide_fraction)[len(wide_fraction) // 2]:.0%})" if wide else f"sgemm: {sgemm:.1f} GFLOP/s")
    summary["sgemm_gflops"] = sgemm
    summary["wide_layer_sgemm_fraction"] = {"min": min(wide_fraction), "max": max(wide_fraction)} if wide else None
    mem_ratios = [r["peak_memory_bytes"]["fullconv"] / max(r["peak_memory_bytes"]["padded"], 1)
                  for r in results if "peak_memory_bytes" in r]
    if mem_ratios:
        worst = max(zip(mem_ratios, (r["name"] for r in results if "peak_memory_bytes" in r)))
        print(f"peak memory of forward+backward, fullconv / padded reference: geomean {geomean(mem_ratios):.2f} "
              f"(max {worst[0]:.2f} on {worst[1]}); shapes above 1: {sum(m > 1 for m in mem_ratios)} of {len(mem_ratios)}")
        summary["peak_memory_ratio"] = {"geomean": geomean(mem_ratios), "max": worst[0], "worst_shape": worst[1],
                                        "above_1": sum(m > 1 for m in mem_ratios)}
    if network is not None:
        fc, au = network["fullconv (fused)"]["median"], network["authors (padded conv)"]["median"]
        print(f"ResNet-18 train step (64x64, batch 16): fullconv {fc * 1e3:.1f} ms, authors' construction "
              f"{au * 1e3:.1f} ms: {au / fc:.2f}x")
        summary["resnet18_train_step"] = {"times_s": network, "speedup": au / fc}
    if dtype != torch.float32:
        print(f"\n(the targets below are the float32 suite's; this run is {args.dtype})")
    print("\ntargets (issue): forward and forward+backward geomean >= 1.3x and none < 0.9x vs padded; "
          ">= 70% of sgemm on 64-512-channel 3x3 layers; peak memory <= reference; ResNet-18 train step >= 1.25x")
    for mode in ("forward", "forward+backward"):
        sp = summary[mode]["padded"]
        print(f"  {mode:<18} geomean {sp['geomean']:.2f}x {'met' if sp['geomean'] >= 1.3 else 'NOT met'}; "
              f"min {sp['min']:.2f}x {'met' if sp['min'] >= 0.9 else 'NOT met'}")
    if wide:
        print(f"  sgemm fraction     min {min(wide_fraction):.0%} {'met' if min(wide_fraction) >= 0.7 else 'NOT met'}")
    if mem_ratios:
        print(f"  peak memory        max ratio {worst[0]:.2f} {'met' if worst[0] <= 1.0 else 'NOT met'}")
    if network is not None:
        print(f"  ResNet-18 step     {au / fc:.2f}x {'met' if au / fc >= 1.25 else 'NOT met'}")
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.date.today().isoformat()
    tag = "" if dtype == torch.float32 else f"-{args.dtype}"
    path = os.path.join(args.out, f"cpu-{env['machine']}-{env['threads']}t{tag}{'-quick' if args.quick else ''}-{stamp}.json")
    with open(path, "w") as f:
        json.dump({"environment": env, "quick": args.quick, "summary": summary,
                   "results": results}, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
