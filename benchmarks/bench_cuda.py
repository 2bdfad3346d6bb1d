"""GPU benchmark: fullconv vs cuDNN's padded convolution, side by side in one run.

Variants per shape (the first three compute the same full convolution):
  fullconv   fullconv.full_convNd (CUDA kernels: no padded tensor, no zero taps)
  cudnn      F.convNd(padding=d*(k-1)) with torch.backends.cudnn.benchmark = True
  pad+conv   F.pad(x, d*(k-1)) then F.convNd(padding=0)
  same       F.convNd(padding=d*(k-1)//2) (smaller output; context only)
Modes: forward, forward+backward (grads of input, weight, bias). Dtypes: float32 (TF32 off
on both sides unless --tf32), bfloat16, float16. Shapes: every conv layer of an F-Conv
ResNet-18 and ResNet-50 at 224x224 batch 64, the Red-Green net, a 3-D ResNet-18 layer.
Shapes run in turn from each network, so a run cut short by --max-seconds covers all of them.
Timing: CUDA events around each run, L2 flushed before it, then the stream held by a device-side
sleep (--hold-us, default 1000) so that the run's kernels are queued before its start event: the
events time the GPU, not the host's dispatch (whose time per call is recorded beside it and
summarised); warm-up, medians (min-max).
Reported: useful TFLOP/s (real products only) and % of the card's peak, ratios
baseline/fullconv (> 1: fullconv faster). --max-seconds bounds the run; shapes not reached
are listed as not measured.

fullconv runs the kernel family FULLCONV_CUDA_ALGORITHM picks (--algorithm: auto = tiled
implicit GEMM for wide layers, direct kernels for few channels; direct; igemm; igemm-gather).
For tensor-core dtypes a further column times the tiled kernels without their channels-last
reads (igemm-gather) beside the default, so one run shows what those reads gain (--no-gather
skips it); --plain-rows times the forward once more with its rows in plain order
(FULLCONV_CUDA_ROW_REGIONS=0) instead of border regions apart from the interior; --tiles
base,mma,mma-narrow,mma-wide,simt-wide,wgmma,wgmma-wide times once more per FULLCONV_CUDA_TILES
value the dtypes it changes (base: the WMMA / 64x64 FMA tiles for every dtype; float16/bfloat16: the
channels-last kernels on mma.sync tiles of up to 128 or 64 columns, or of 256 rows (mma-wide),
or forward and grad_input on Hopper's wgmma (wgmma: 128 x 128, wgmma-wide: 128 x 256; compute
capability 9.0 with sm_90a code, the mma tiles elsewhere); float32 without TF32: forward and grad_input on wide FMA tiles), every mode including --passes, beside the default (auto: the per-problem choice).
These columns are variant time / default time: below 1 the variant is faster. Layers of at
most 4 input channels per group (RGB stems) also time the tiled kernels (igemm/fc:
FULLCONV_CUDA_ALGORITHM=igemm) and the kernels auto chose before the register-blocked direct
ones (element/fc: FULLCONV_CUDA_DIRECT=element: forward and grad_weight on the tiles,
grad_input one thread per element) beside the default, which runs all three passes there on
the direct register-blocked kernels.

    python benchmarks/bench_cuda.py [--quick] [--algorithm auto|direct|igemm|igemm-gather] [--no-gather]
                                    [--plain-rows] [--tiles base,mma,mma-narrow,mma-wide,simt-wide,wgmma,wgmma-wide] [--channels-last]
                                    [--passes]
                                    [--max-seconds S] [--out DIR]
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fullconv  # noqa: E402
import shapes  # noqa: E402
from timing import WithEnv  # noqa: E402

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
FULL = {1: fullconv.full_conv1d, 2: fullconv.full_conv2d, 3: fullconv.full_conv3d}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# dense peak TFLOP/s per card and math mode (vendor data sheets, SXM parts)
PEAKS = {"H100": {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4},
         "H200": {"float32": 67.0, "tf32": 494.7, "bfloat16": 989.4, "float16": 989.4},
         "A100": {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0, "float16": 312.0}}


# ratios baseline/fullconv reported per shape (those a run timed)
VARIANTS = ("cudnn", "pad+conv", "same", "fullconv-gather", "fullconv-plain", "fullconv-base", "fullconv-mma",
            "fullconv-mma-narrow", "fullconv-mma-wide", "fullconv-simt-wide", "fullconv-wgmma", "fullconv-wgmma-wide", "fullconv-igemm",
            "fullconv-element")
# layers of at most this many input channels per group (RGB stems) also time, beside the default
# (auto: the direct register-blocked kernels there), the tiled kernels
# (FULLCONV_CUDA_ALGORITHM=igemm) and auto's choice before those kernels
# (FULLCONV_CUDA_DIRECT=element): the routing of those layers, measured side by side
FEW_INPUT_CHANNELS = 4
FAMILY_VARIANTS = {"fullconv-igemm": {"FULLCONV_CUDA_ALGORITHM": "igemm"},
                   "fullconv-element": {"FULLCONV_CUDA_DIRECT": "element"}}
# fullconv variants besides the default, timed in the same process (ratio variant / default < 1:
# the variant is faster)
TILE_VARIANTS = {"base": "fullconv-base", "mma": "fullconv-mma", "mma-narrow": "fullconv-mma-narrow",
                 "mma-wide": "fullconv-mma-wide", "simt-wide": "fullconv-simt-wide", "wgmma": "fullconv-wgmma",
                 "wgmma-wide": "fullconv-wgmma-wide"}
# the dtypes each FULLCONV_CUDA_TILES value changes (float32: with TF32 off)
TILE_DTYPES = {"base": ("float32", "bfloat16", "float16"), "mma": ("bfloat16", "float16"),
               "mma-narrow": ("bfloat16", "float16"), "mma-wide": ("bfloat16", "float16"), "simt-wide": ("float32",),
               "wgmma": ("bfloat16", "float16"), "wgmma-wide": ("bfloat16", "float16")}


def suite(quick):
    """The shapes, taken in turn from each network (ResNet-18, ResNet-50, the Red-Green net and
    the 3-D layer), so that a run cut short by --max-seconds has measured some of each."""
    batch = 16 if quick else 64
    groups = [shapes.unique(shapes.resnet18_full_layers(224, batch)),
              shapes.unique(shapes.resnet50_full_layers(224, batch)),
              shapes.red_green_layers(200) + [("r3d-18 layer2 conv 3x3x3", 3, 8 if quick else 32, 128, 128, 3, 1, 1, 1, 16)]]
    layers = []
    for i in range(max(len(g) for g in groups)):
        layers += [g[i] for g in groups if i < len(g)]
    return shapes.unique(layers)


# (mode, tag, passes of useful multiply-adds): the last two only with --passes
MODES = (("forward", "fwd", 1), ("forward+backward", "fwd+bwd", 3), ("grad_input", "dgrad", 1),
         ("grad_weight", "wgrad", 1))


class Timer:
    """CUDA events around each run with the L2 cache flushed before it (CPU: perf_counter).

    After the flush the stream is held busy for `hold_us` (a device-side sleep) before the start
    event, so the run's kernels are queued while the GPU still sleeps and the events time the GPU
    alone: without the hold, a variant whose host side (Python, dispatch, autograd) outlasts the
    flush has the GPU idle inside its events, which times the host, not the kernels. The host
    time of each call is recorded beside it (`host_median`, seconds) and runs whose host time
    exceeded the hold are counted (`host_over_hold`). hold_us=0: no hold (events time both)."""

    def __init__(self, device, hold_us=1000.0):
        self.device = device
        self.flush = torch.empty(256 << 20, dtype=torch.uint8, device=device) if device == "cuda" else None
        self.hold_us = hold_us
        self.hold_cycles = 0
        if device == "cuda" and hold_us > 0:
            # the sleep counts SM clock cycles: at most the card's clock (kHz; 2 GHz if unknown)
            khz = getattr(torch.cuda.get_device_properties(0), "clock_rate", 0) or 2_000_000
            self.hold_cycles = int(hold_us * khz / 1e3)

    def run(self, fn, budget_s=0.5, min_reps=3, max_reps=25):
        fn()  # warm-up (also cudnn.benchmark's algorithm search)
        fn()
        times, host = [], []
        t_start = time.perf_counter()
        while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - t_start < budget_s):
            if self.device == "cuda":
                self.flush.zero_()
                if self.hold_cycles:
                    torch.cuda._sleep(self.hold_cycles)
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                h0 = time.perf_counter()
                fn()
                host.append(time.perf_counter() - h0)
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
                host.append(times[-1])
        times.sort()
        over = sum(h * 1e6 > self.hold_us for h in host) if self.hold_cycles else None
        return {"median": times[len(times) // 2], "min": times[0], "max": times[-1], "reps": len(times),
                "host_median": sorted(host)[len(host) // 2], "host_over_hold": over}


def run_case(case, dtype, timer, device, gather=False, channels_last=False, passes=False, plain_rows=False,
             tiles=(), families=False):
    name, nd, n, cin, cout, k, s, d, g, L = case
    x = torch.randn(n, cin, *(L,) * nd, device=device, dtype=dtype)
    if channels_last and nd in (2, 3):  # both sides get the same channels-last input
        x = x.contiguous(memory_format=torch.channels_last if nd == 2 else torch.channels_last_3d)
    w = (torch.randn(cout, cin // g, *(k,) * nd, device=device) / math.sqrt(cin // g * k ** nd)).to(dtype)
    b = torch.randn(cout, device=device, dtype=dtype)
    p = d * (k - 1)
    conv, full = CONV[nd], FULL[nd]
    pads = (p,) * (2 * nd)
    fwd = {
        "fullconv": lambda x, w, b: full(x, w, b, s, d, g),
        "cudnn": lambda x, w, b: conv(x, w, b, s, p, d, g),
        "pad+conv": lambda x, w, b: conv(F.pad(x, pads), w, b, s, 0, d, g),
        "same": lambda x, w, b: conv(x, w, b, s, p // 2, d, g),
    }
    if gather:  # the tiled kernels without their channels-last reads, for comparison
        fwd["fullconv-gather"] = WithEnv({"FULLCONV_CUDA_ALGORITHM": "igemm-gather"}, fwd["fullconv"])
    if plain_rows:  # the forward's rows in plain order, not by border regions (forward only)
        fwd["fullconv-plain"] = WithEnv({"FULLCONV_CUDA_ROW_REGIONS": "0"}, fwd["fullconv"])
    for t in tiles:  # the float16/bfloat16 channels-last kernels on other tiles (FULLCONV_CUDA_TILES)
        fwd[TILE_VARIANTS[t]] = WithEnv({"FULLCONV_CUDA_TILES": t}, fwd["fullconv"])
    family_variants = FAMILY_VARIANTS if families and cin // g <= FEW_INPUT_CHANNELS else {}
    for v, env in family_variants.items():  # the few-input-channel layers' routing, side by side
        fwd[v] = WithEnv(env, fwd["fullconv"])
    fc_variants = ["fullconv", "fullconv-gather", "fullconv-plain"] + [TILE_VARIANTS[t] for t in tiles] + list(
        family_variants)
    # the benchmark refuses to time a wrong answer
    ref = fwd["cudnn"](x.float(), w.float(), b.float())
    tol = 1e-3 if dtype == torch.float32 else 3e-2
    for v in fc_variants:
        if v in fwd:
            got = fwd[v](x, w, b).float()
            err = (got - ref).abs().max().item() / max(ref.abs().max().item(), 1.0)
            assert err <= tol, f"{name} {dtype}: {v} differs from the reference (rel. err {err:.3g})"
    del ref, got
    res = {"forward": {}, "forward+backward": {}}
    for v, f in fwd.items():
        res["forward"][v] = timer.run(lambda: f(x, w, b))
    xg, wg, bg = (t.detach().clone().requires_grad_() for t in (x, w, b))
    for v, f in fwd.items():
        if v == "fullconv-plain":
            continue
        def step(f=f):
            y = f(xg, wg, bg)
            torch.autograd.grad(y, (xg, wg, bg), torch.ones_like(y))
        res["forward+backward"][v] = timer.run(step)
    if passes:  # each backward pass alone: fullconv's op vs ATen's (cuDNN's) with the same mask
        gy = torch.randn_like(fwd["fullconv"](x, w, b))
        st, dil, pad = [s] * nd, [d] * nd, [p] * nd
        for mode, mask in (("grad_input", [True, False, False]), ("grad_weight", [False, True, False])):
            backward = lambda: torch.ops.fullconv.full_conv_backward(gy, x, w, st, dil, g, mask)
            res[mode] = {
                "fullconv": timer.run(backward),
                "cudnn": timer.run(lambda: torch.ops.aten.convolution_backward(
                    gy, x, w, None, st, pad, dil, False, [0] * nd, g, mask)),
            }
            for t in tiles:
                res[mode][TILE_VARIANTS[t]] = timer.run(WithEnv({"FULLCONV_CUDA_TILES": t}, backward))
            for v, env in family_variants.items():
                res[mode][v] = timer.run(WithEnv(env, backward))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 16 instead of 64")
    ap.add_argument("--dtypes", default="float32,bfloat16,float16")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 on both sides for float32")
    ap.add_argument("--algorithm", default=os.environ.get("FULLCONV_CUDA_ALGORITHM", "auto"),
                    choices=["auto", "direct", "igemm", "igemm-gather"], help="fullconv's CUDA kernel family")
    ap.add_argument("--no-gather", action="store_true",
                    help="skip the igemm-gather column (tensor-core dtypes: the tiled kernels without "
                         "channels-last reads, timed beside the default)")
    ap.add_argument("--plain-rows", action="store_true",
                    help="also time the forward with its rows in plain order (FULLCONV_CUDA_ROW_REGIONS=0)")
    ap.add_argument("--tiles", default="",
                    help="comma-separated FULLCONV_CUDA_TILES values (base, mma, mma-narrow, mma-wide, simt-wide, wgmma, "
                         "wgmma-wide) also timed beside the default (auto) for the dtypes each changes")
    ap.add_argument("--channels-last", action="store_true",
                    help="channels-last inputs (2-D/3-D shapes) for every variant")
    ap.add_argument("--passes", action="store_true",
                    help="also time grad_input and grad_weight alone against ATen's convolution_backward")
    ap.add_argument("--hold-us", type=float, default=1000.0,
                    help="device-side sleep before each timed run so its launches queue up (0: none, "
                         "the events then also time host-side gaps)")
    ap.add_argument("--max-seconds", type=float, default=float("inf"))
    ap.add_argument("--device", default="cuda", help="cuda (cpu only to smoke-test the script)")
    ap.add_argument("--limit", type=int, default=None, help="first N shapes only")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    tiles = [t for t in args.tiles.split(",") if t]
    for t in tiles:
        if t not in TILE_VARIANTS:
            ap.error(f"--tiles: unknown value {t!r} (choose from {', '.join(TILE_VARIANTS)})")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_cuda.py: no CUDA device")
    os.environ["FULLCONV_CUDA_ALGORITHM"] = args.algorithm
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    peaks = next((v for k, v in PEAKS.items() if k in card), None)
    env = {"card": card, "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if args.device == "cuda" else None,
           "tf32": args.tf32, "hold_us": args.hold_us if args.device == "cuda" else 0, "channels_last": args.channels_last, "fullconv_cuda_algorithm": args.algorithm, "date": datetime.datetime.now().isoformat(timespec="seconds")}
    print(f"# fullconv GPU benchmark on {card}: torch {env['torch']}, CUDA {env['cuda']}, "
          f"cuDNN {env['cudnn']}, TF32 {'on' if args.tf32 else 'off'} (both sides), "
          f"{'channels-last' if args.channels_last else 'contiguous'} inputs, "
          f"fullconv kernels: {args.algorithm}")
    cases = suite(args.quick)[: args.limit]
    dtypes = [d for d in args.dtypes.split(",") if d]
    timer = Timer(args.device, args.hold_us)
    t0 = time.perf_counter()
    results, not_measured = [], []
    hdr = (f"{'shape':<28}{'dtype':<9}{'mode':<8}{'fullconv ms':>12}{'TFLOP/s':>9}{'%peak':>7}"
           f"{'cudnn/fc':>9}{'pad+conv/fc':>12}{'same/fc':>9}{'gather/fc':>10}{'plain/fc':>9}"
           f"{'igemm/fc':>10}{'element/fc':>11}"
           + "".join(f"{t + '/fc':>14}" for t in tiles))
    print(hdr)
    print("-" * len(hdr))
    for case in cases:
        for dname in dtypes:
            if time.perf_counter() - t0 > args.max_seconds:
                not_measured.append(f"{case[0]} {dname}")
                continue
            tensor_cores = dname in ("bfloat16", "float16") or (dname == "float32" and args.tf32)
            gather = (not args.no_gather and args.device == "cuda" and tensor_cores
                      and args.algorithm in ("auto", "igemm"))
            res = run_case(case, DTYPES[dname], timer, args.device, gather, args.channels_last, args.passes,
                           args.plain_rows and args.device == "cuda" and args.algorithm != "direct",
                           # (on the CPU the setting changes nothing: there it only smoke-tests the columns)
                           [t for t in tiles if dname in TILE_DTYPES[t] and not (dname == "float32" and args.tf32)]
                           if args.algorithm in ("auto", "igemm") else [],
                           args.algorithm == "auto")  # (on the CPU: a smoke test of the columns)
            macs = shapes.useful_macs(*case[1:])
            row = {"name": case[0], "shape": case[1:], "dtype": dname, "times_s": res, "ratios": {},
                   "useful_tflops": {}}
            for mode, tag, mult in MODES:
                if mode not in res:
                    continue
                t = res[mode]
                fc = t["fullconv"]["median"]
                ratios = {v: t[v]["median"] / fc for v in VARIANTS if v in t}
                tflops = mult * 2 * macs / fc / 1e12
                peak = peaks.get("tf32" if (dname == "float32" and args.tf32) else dname) if peaks else None
                row["ratios"][mode] = ratios
                row["useful_tflops"][mode] = tflops
                pct = f"{100 * tflops / peak:6.1f}%" if peak else "     -"
                cell = lambda v, width: f"{ratios[v]:>{width}.2f}" if v in ratios else f"{'-':>{width}}"
                print(f"{case[0]:<28}{dname:<9}{tag:<8}{fc * 1e3:>12.3f}{tflops:>9.2f}{pct:>7}"
                      + cell("cudnn", 9) + cell("pad+conv", 12) + cell("same", 9) + cell("fullconv-gather", 10)
                      + cell("fullconv-plain", 9) + cell("fullconv-igemm", 10) + cell("fullconv-element", 11)
                      + "".join(cell(TILE_VARIANTS[t], 14) for t in tiles),
                      flush=True)
            results.append(row)
    summary = {}
    for mode, _, _ in MODES:
        for dname in dtypes:
            rs = [r["ratios"][mode] for r in results if r["dtype"] == dname and mode in r["ratios"]]
            if not rs:
                continue
            summary[f"{mode} {dname}"] = {
                v: {"geomean": math.exp(sum(math.log(r[v]) for r in rs) / len(rs)),
                    "min": min(r[v] for r in rs), "max": max(r[v] for r in rs)}
                for v in VARIANTS if all(v in r for r in rs)}
            for v in FAMILY_VARIANTS:  # over the layers that time them (few input channels)
                few = [r[v] for r in rs if v in r]
                if few:
                    summary[f"{mode} {dname}"][v] = {"geomean": math.exp(sum(math.log(x) for x in few) / len(few)),
                                                     "min": min(few), "max": max(few), "layers": len(few)}
    print()
    for k, s in summary.items():
        gather = (f"; igemm-gather/default: geomean {s['fullconv-gather']['geomean']:.2f}x"
                  if "fullconv-gather" in s else "")
        gather += (f"; plain rows/regions: geomean {s['fullconv-plain']['geomean']:.2f}x"
                   if "fullconv-plain" in s else "")
        for t in tiles:
            v = TILE_VARIANTS[t]
            gather += f"; {t} tiles/auto: geomean {s[v]['geomean']:.2f}x (min {s[v]['min']:.2f})" if v in s else ""
        for v, label in (("fullconv-igemm", "tiles"), ("fullconv-element", "previous auto")):
            if v in s:  # (only the few-input-channel layers time these)
                gather += (f"; {label}/auto on <= {FEW_INPUT_CHANNELS} input channels: geomean "
                           f"{s[v]['geomean']:.2f}x (min {s[v]['min']:.2f}, max {s[v]['max']:.2f})")
        pad = f"; vs F.pad+conv: geomean {s['pad+conv']['geomean']:.2f}x" if "pad+conv" in s else ""
        print(f"{k:<28} vs cuDNN: geomean {s['cudnn']['geomean']:.2f}x (min {s['cudnn']['min']:.2f}, "
              f"max {s['cudnn']['max']:.2f}){pad}{gather}")
    # the host side of one call (dispatch, autograd), which the hold keeps out of the GPU times
    host = {}
    for r in results:
        for mode, t in r["times_s"].items():
            for v in ("fullconv", "cudnn"):
                if v in t and "host_median" in t[v]:
                    host.setdefault(mode, {}).setdefault(v, []).append(t[v]["host_median"])
    over = sum(t[v].get("host_over_hold") or 0 for r in results for t in r["times_s"].values() for v in t)
    for mode, h in host.items():
        cells = ", ".join(f"{v} {1e6 * statistics.median(x):.0f} us" for v, x in h.items())
        print(f"host time per call, {mode:<16} median over the layers: {cells}")
    if timer.hold_cycles:
        print(f"timed runs whose host side outlasted the {args.hold_us:.0f} us hold (their GPU time may "
              f"include host gaps): {over}")
    if not_measured:
        print(f"not measured (time budget {args.max_seconds:.0f} s): {len(not_measured)} shape/dtype pairs")
    os.makedirs(args.out, exist_ok=True)
    tag = card.replace(" ", "-")
    suffix = ("-quick" if args.quick else "") + ("-channels-last" if args.channels_last else "")
    path = os.path.join(args.out, f"cuda-{tag}{suffix}-{datetime.date.today().isoformat()}.json")
    with open(path, "w") as f:
        json.dump({"environment": env, "quick": args.quick, "summary": summary, "results": results,
                   "not_measured": not_measured}, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
