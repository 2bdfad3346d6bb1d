"""Which kernels a pass runs, and how long each takes: fullconv against cuDNN, per layer.

bench_cuda.py times a whole pass (CUDA events around the call); this script splits a pass into
the device kernels it launches, from the PyTorch profiler's CUDA activity records (CUPTI): the
tiled GEMM itself, the layout copies around it (NCHW <-> channels-last), the weight packing and
the flags of non-finite weights, split-K sums; cuDNN's own kernels and transposes beside them.
Each pass runs warm (--reps times inside the profiled region) on the default kernels and, for
float16/bfloat16, once more per FULLCONV_CUDA_TILES value given with --tiles; per kernel name it
prints the mean device time per pass and its share of the pass's kernel time.

    python benchmarks/cuda_kernel_times.py [--dtype float16] [--tiles mma-wide] [--layers rn18-l1,...]
                                           [--reps 5] [--quick] [--device cuda|cpu] [--out DIR]

Layers (224x224 inputs, batch 64, F-Conv sizes of shapes.py): rn18-l1 (64 -> 64, 3x3 at 57x57),
rn18-l3 (256 -> 256 at 21x21), rn18-l4 (512 -> 512 at 15x15), rn50-l3-1x1 (1024 -> 256, 1x1 at
21x21). --device cpu only smoke-tests the script (CPU operators, not kernels).
"""
from __future__ import annotations

import argparse
import collections
import datetime
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fullconv  # noqa: E402
from timing import WithEnv, save_results  # noqa: E402

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# name: (batch, in channels, out channels, kernel, size)
LAYERS = {"rn18-l1": (64, 64, 64, 3, 57), "rn18-l3": (64, 256, 256, 3, 21), "rn18-l4": (64, 512, 512, 3, 15),
          "rn50-l3-1x1": (64, 1024, 256, 1, 21)}
QUICK = {"rn18-l1": (2, 16, 16, 3, 8), "rn18-l3": (2, 32, 136, 3, 6), "rn18-l4": (2, 64, 72, 3, 5),
         "rn50-l3-1x1": (2, 64, 32, 1, 6)}


def pass_fns(x, w, gy, k):
    """{pass: (fullconv call, cuDNN call)} of one layer (cuDNN: padding k-1, the same output)."""
    st, dil, pad = [1, 1], [1, 1], [k - 1, k - 1]
    fns = {"forward": (lambda: fullconv.full_conv2d(x, w), lambda: F.conv2d(x, w, padding=k - 1))}
    for mode, mask in (("grad_input", [True, False, False]), ("grad_weight", [False, True, False])):
        fns[mode] = (lambda mask=mask: torch.ops.fullconv.full_conv_backward(gy, x, w, st, dil, 1, mask),
                     lambda mask=mask: torch.ops.aten.convolution_backward(gy, x, w, None, st, pad, dil, False,
                                                                           [0, 0], 1, mask))
    return fns


def kernel_times(fn, reps, device):
    """{kernel name: mean device seconds per call} over `reps` warm calls of fn."""
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(reps):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
    totals = collections.defaultdict(float)
    for e in prof.events():
        if device == "cuda":
            if e.device_type == torch.autograd.DeviceType.CUDA:  # a kernel (or copy/memset) on the device
                totals[e.name] += e.time_range.elapsed_us() * 1e-6 / reps
        elif e.device_type == torch.autograd.DeviceType.CPU and e.cpu_parent is None:
            totals[e.name] += e.cpu_time_total * 1e-6 / reps
    return dict(totals)


def short(name, width=70):
    name = name.replace("fullconv::cuda::", "").replace("(anonymous namespace)::", "")
    return name if len(name) <= width else name[:width - 3] + "..."


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float16", choices=sorted(DTYPES))
    ap.add_argument("--tiles", default="mma-wide",
                    help="comma-separated FULLCONV_CUDA_TILES values also profiled (float16/bfloat16)")
    ap.add_argument("--layers", default=",".join(LAYERS))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small shapes (smoke test)")
    ap.add_argument("--device", default="cuda", help="cuda (cpu only to smoke-test the script)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("cuda_kernel_times.py: no CUDA device")
    layers = [name for name in args.layers.split(",") if name]
    for name in layers:
        if name not in LAYERS:
            sys.exit(f"cuda_kernel_times.py: unknown layer {name!r} (one of {', '.join(LAYERS)})")
    if args.reps < 1:
        sys.exit("cuda_kernel_times.py: --reps must be at least 1")
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    dtype = DTYPES[args.dtype]
    tiles = [t for t in args.tiles.split(",") if t] if dtype in (torch.float16, torch.bfloat16) else []
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"# kernels per pass on {card}: torch {torch.__version__}, {args.dtype}, TF32 off, contiguous inputs, "
          f"mean of {args.reps} warm calls", flush=True)
    out = {"environment": {"card": card, "torch": torch.__version__, "cuda": torch.version.cuda,
                           "dtype": args.dtype, "reps": args.reps,
                           "date": datetime.datetime.now().isoformat(timespec="seconds")},
           "layers": {}}
    torch.manual_seed(0)
    for name in layers:
        n, c, k_out, k, hw = (QUICK if args.quick else LAYERS)[name]
        x = torch.randn(n, c, hw, hw, device=args.device, dtype=dtype)
        w = (torch.randn(k_out, c, k, k, device=args.device) / (c * k * k) ** 0.5).to(dtype)
        gy = torch.randn(n, k_out, hw + k - 1, hw + k - 1, device=args.device, dtype=dtype)
        fns = pass_fns(x, w, gy, k)
        out["layers"][name] = {}
        for mode, (fc, cu) in fns.items():
            variants = {"fullconv": fc, "cuDNN": cu}
            for t in tiles:
                variants[f"fullconv {t}"] = WithEnv({"FULLCONV_CUDA_TILES": t}, fc)
            rows = {}
            for label, fn in variants.items():
                times = kernel_times(fn, args.reps, args.device)
                total = sum(times.values())
                rows[label] = {"total_s": total, "kernels_s": times}
                print(f"{name} {mode:<12} {label:<22} {total * 1e3:9.3f} ms in {len(times)} kernels", flush=True)
                for kname, t in sorted(times.items(), key=lambda kv: -kv[1]):
                    print(f"    {t * 1e3:9.3f} ms {100 * t / max(total, 1e-12):5.1f}%  {short(kname)}")
            out["layers"][name][mode] = rows
    save_results(args.out, "kernel-times", card, args.quick, out)


if __name__ == "__main__":
    main()
