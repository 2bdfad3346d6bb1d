"""Where the tiled CUDA kernels lose time: their GEMM core, their implicit gather, each pass.

bench_cuda.py says how far fullconv is from cuDNN per layer; this script splits that gap, in
one process, side by side (CUDA events, L2 flushed before each run, medians):

  core     a 1x1 stride-1 convolution on a channels-last input, fullconv's tiled kernels
           forced (FULLCONV_CUDA_ALGORITHM=igemm): the implicit GEMM with trivial indexing and
           no layout copy, on the base tiles and on each other tiles kind of the dtype
           (FULLCONV_CUDA_TILES: mma, mma-narrow, mma-wide, wgmma, wgmma-wide for
           float16/bfloat16, simt-wide for float32).
           Against cuBLAS (torch.mm of the same M x K by K x N) and cuDNN's 1x1 convolution.
           core/cuBLAS is the GEMM core's own efficiency.
  gather   the same 1x1 on a contiguous (NCHW) input, tiles gathering element by element
           (igemm-gather): what the gather costs against the channels-last reads.
  taps     a 3x3 full convolution with C input channels against a 1x1 with 9C (the same GEMM
           K), both channels-last: what the taps' index math and border handling cost.
  passes   forward, grad_input and grad_weight of the 3x3 layer alone, fullconv (its default
           tiles, then each other tiles kind of the dtype) vs cuDNN.

Useful TFLOP/s (real products only) and % of the card's dense peak for each.

    python benchmarks/cuda_gemm_core.py [--dtypes float16,float32] [--quick] [--out DIR]
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fullconv  # noqa: E402
from bench_cuda import PEAKS, Timer  # noqa: E402
from timing import WithEnv, save_results  # noqa: E402

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
CL = torch.channels_last


def igemm(fn, gather=False, tiles="base"):
    return WithEnv({"FULLCONV_CUDA_ALGORITHM": "igemm-gather" if gather else "igemm", "FULLCONV_CUDA_TILES": tiles},
                   fn)


# the tiles kinds besides base that change each dtype's kernels (float32: TF32 off)
OTHER_TILES = {torch.float16: ("mma", "mma-narrow", "mma-wide", "wgmma", "wgmma-wide"),
               torch.bfloat16: ("mma", "mma-narrow", "mma-wide", "wgmma", "wgmma-wide"),
               torch.float32: ("simt-wide",)}


def check(name, got, ref, dtype):
    err = (got.float() - ref.float()).abs().max().item() / max(ref.float().abs().max().item(), 1.0)
    tol = 1e-3 if dtype == torch.float32 else 3e-2
    assert err <= tol, f"{name}: differs from the reference (rel. err {err:.3g})"


def core_rows(timer, dtype, device, n, c, k, hw):
    """1x1 stride 1: fullconv tiles (channels-last, NCHW gather) vs cuBLAS and cuDNN."""
    x = torch.randn(n, c, hw, hw, device=device, dtype=dtype)
    x_cl = x.contiguous(memory_format=CL)
    w = (torch.randn(k, c, 1, 1, device=device) / math.sqrt(c)).to(dtype)
    a = x_cl.permute(0, 2, 3, 1).reshape(-1, c)  # (M, K) view of the channels-last input
    bmat = w.view(k, c).t()                         # (K, N)
    full = igemm(lambda t: fullconv.full_conv2d(t, w))
    gather = igemm(lambda t: fullconv.full_conv2d(t, w), gather=True)
    ref = F.conv2d(x.float(), w.float())
    check("core", full(x_cl), ref, dtype)
    check("gather", gather(x), ref, dtype)
    macs = n * hw * hw * c * k
    rows = {"fullconv core (channels-last)": timer.run(lambda: full(x_cl))}
    for tiles in OTHER_TILES.get(dtype, ()):
        other = igemm(lambda t: fullconv.full_conv2d(t, w), tiles=tiles)
        check(f"core, {tiles} tiles", other(x_cl), ref, dtype)
        rows[f"fullconv core, {tiles} tiles"] = timer.run(lambda: other(x_cl))
    rows.update({
        "fullconv gather (NCHW)": timer.run(lambda: gather(x)),
        "cuBLAS mm": timer.run(lambda: torch.mm(a, bmat)),
        "cuDNN 1x1 (channels-last)": timer.run(lambda: F.conv2d(x_cl, w)),
    })
    return macs, rows


def taps_rows(timer, dtype, device, n, c, k, hw):
    """3x3 full convolution with c channels vs a 1x1 with 9c (same GEMM K), channels-last."""
    x = torch.randn(n, c, hw, hw, device=device, dtype=dtype).contiguous(memory_format=CL)
    w = (torch.randn(k, c, 3, 3, device=device) / math.sqrt(9 * c)).to(dtype)
    x9 = torch.randn(n, 9 * c, hw, hw, device=device, dtype=dtype).contiguous(memory_format=CL)
    w9 = (torch.randn(k, 9 * c, 1, 1, device=device) / math.sqrt(9 * c)).to(dtype)
    f3 = igemm(lambda: fullconv.full_conv2d(x, w))
    f1 = igemm(lambda: fullconv.full_conv2d(x9, w9))
    check("taps", f3(), F.conv2d(x.float(), w.float(), padding=2), dtype)
    macs3 = n * c * k * 9 * hw * hw  # every real product of the full convolution
    macs1 = n * hw * hw * 9 * c * k
    return {"fullconv 3x3 (C)": (macs3, timer.run(f3)), "fullconv 1x1 (9C)": (macs1, timer.run(f1))}


def pass_rows(timer, dtype, device, n, c, k, hw):
    """Each pass of the 3x3 layer alone (default kernels), fullconv vs cuDNN (padding 2)."""
    x = torch.randn(n, c, hw, hw, device=device, dtype=dtype)
    w = (torch.randn(k, c, 3, 3, device=device) / math.sqrt(9 * c)).to(dtype)
    gy = torch.randn(n, k, hw + 2, hw + 2, device=device, dtype=dtype)
    macs = n * c * k * 9 * hw * hw
    st, dil, pad = [1, 1], [1, 1], [2, 2]
    rows = {}
    for mode, mask in (("forward", None), ("grad_input", [True, False, False]),
                       ("grad_weight", [False, True, False])):
        if mask is None:
            fc = lambda: fullconv.full_conv2d(x, w)
            cu = lambda: F.conv2d(x, w, padding=2)
        else:
            fc = lambda mask=mask: torch.ops.fullconv.full_conv_backward(gy, x, w, st, dil, 1, mask)
            cu = lambda mask=mask: torch.ops.aten.convolution_backward(gy, x, w, None, st, pad, dil, False,
                                                                       [0, 0], 1, mask)
        rows[mode] = {"fullconv": timer.run(fc), "cuDNN": timer.run(cu)}
        for tiles in OTHER_TILES.get(dtype, ()):  # the same pass on each other tiles kind
            other = igemm(fc, tiles=tiles)
            if mode == "forward":
                check(f"forward, {tiles} tiles", other(), F.conv2d(x.float(), w.float(), padding=2), dtype)
            rows[mode][f"fullconv, {tiles} tiles"] = timer.run(other)
    return macs, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", default="float16,float32")
    ap.add_argument("--quick", action="store_true", help="small shapes (smoke test)")
    ap.add_argument("--device", default="cuda", help="cuda (cpu only to smoke-test the script)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("cuda_gemm_core.py: no CUDA device")
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    peaks = next((v for key, v in PEAKS.items() if key in card), None)
    timer = Timer(args.device)
    n = 2 if args.quick else 64
    # (C, K, H=W): ResNet-like GEMMs; the last, wide one is near cuBLAS's best case
    core_shapes = [(64, 64, 8), (32, 48, 6)] if args.quick else [(256, 256, 28), (512, 512, 14), (1024, 1024, 14)]
    tap_shape = (16, 32, 8) if args.quick else (128, 128, 28)
    print(f"# fullconv GEMM-core probe on {card}: torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"TF32 off, batch {n}")
    out = {"environment": {"card": card, "torch": torch.__version__, "cuda": torch.version.cuda,
                           "date": datetime.datetime.now().isoformat(timespec="seconds"), "batch": n},
           "rows": []}

    def report(section, label, dname, macs, t, base=None):
        tflops = 2 * macs / t["median"] / 1e12
        peak = peaks.get(dname) if peaks else None
        pct = f"{100 * tflops / peak:5.1f}%" if peak else "    -"
        rel = f"{base / t['median']:6.2f}x" if base else "      "
        print(f"{section:<8}{label:<46}{dname:<9}{t['median'] * 1e3:9.3f} ms {tflops:8.2f} TFLOP/s {pct}  {rel}",
              flush=True)
        out["rows"].append({"section": section, "label": label, "dtype": dname, "macs": macs, "time_s": t,
                            "useful_tflops": tflops})

    print(f"{'':8}{'':46}{'':9}{'median':>12} {'useful':>15} {'%peak':>6}  vs first row")
    for dname in [d for d in args.dtypes.split(",") if d]:
        dtype = DTYPES[dname]
        for c, k, hw in core_shapes:
            macs, rows = core_rows(timer, dtype, args.device, n, c, k, hw)
            first = rows["fullconv core (channels-last)"]["median"]
            for label, t in rows.items():
                report("core", f"{label} C{c} K{k} {hw}^2", dname, macs, t, first)
        taps = taps_rows(timer, dtype, args.device, n, *tap_shape)
        first = None
        for label, (macs, t) in taps.items():
            report("taps", f"{label} C{tap_shape[0]} K{tap_shape[1]} {tap_shape[2]}^2", dname, macs, t, first)
            first = first or t["median"]
        macs, rows = pass_rows(timer, dtype, args.device, n, *tap_shape)
        for mode, ts in rows.items():
            report("passes", f"{mode} fullconv", dname, macs, ts["fullconv"])
            for label, t in ts.items():
                if label.startswith("fullconv, "):
                    report("passes", f"{mode} {label}", dname, macs, t, ts["fullconv"]["median"])
            report("passes", f"{mode} cuDNN", dname, macs, ts["cuDNN"], ts["fullconv"]["median"])
    save_results(args.out, "gemm-core", card, args.quick, out)


if __name__ == "__main__":
    main()
