"""Per-call host time of fullconv against F.convNd on layers small enough that the kernels take
a few microseconds: what the Python wrappers, the dispatcher and the autograd formulas cost.

Each problem is timed side by side (benchmarks/timing.py: warm-up, alternating rounds,
medians and min-max) in three modes: forward without autograd, forward with inputs that
require grad (the autograd node is built), forward + backward. Variants: F.convNd with
padding=dilation*(k-1), the functional API (fullconv.full_conv2d), the FullConvNd module and
the raw operator (torch.ops.fullconv.full_conv). On CUDA a block of calls ends with a
synchronisation, so a call's time is its host time wherever that exceeds the kernel's.

    python benchmarks/host_overhead.py [--device cpu|cuda] [--min-time 2] [--quick] [--out DIR]
"""
import argparse
import datetime
import json
import os
import platform
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fullconv  # noqa: E402
from timing import side_by_side, timer  # noqa: E402

PROBLEMS = [  # name, input shape, weight shape, stride, dilation, groups
    ("tiny 4->8 3x3, 6x6", (1, 4, 6, 6), (8, 4, 3, 3), 1, 1, 1),
    ("small 16->16 3x3, 16x16 batch 8", (8, 16, 16, 16), (16, 16, 3, 3), 1, 1, 1),
    ("depthwise 32 3x3/2, 8x8", (2, 32, 8, 8), (32, 1, 3, 3), 2, 1, 32),
]
MODES = ("forward", "forward, grad on", "forward+backward")


def statements(mode):
    calls = {
        "F.conv2d(padding=k-1)": "F.conv2d(x, w, b, stride, pad, dilation, groups)",
        "fullconv.full_conv2d": "fullconv.full_conv2d(x, w, b, stride, dilation, groups)",
        "FullConv2d module": "m(x)",
        "raw operator": "op(x, w, b, [stride] * 2, [dilation] * 2, groups)",
    }
    if mode == "forward+backward":
        return {k: f"{v}.sum().backward()" for k, v in calls.items()}
    return calls


def run(device, min_time, dtype, problems):
    results = []
    for name, xs, ws, stride, dilation, groups in problems:
        k = ws[-1]
        for mode in MODES:
            grad = mode != "forward"
            x = torch.randn(xs, device=device, dtype=dtype, requires_grad=grad)
            m = fullconv.FullConv2d(xs[1], ws[0], k, stride=stride, dilation=dilation, groups=groups,
                                    device=device, dtype=dtype).requires_grad_(grad)
            env = dict(F=F, fullconv=fullconv, op=torch.ops.fullconv.full_conv, m=m, x=x,
                       w=m.weight, b=m.bias, stride=stride, dilation=dilation, groups=groups,
                       pad=dilation * (k - 1))
            timers = {v: timer(s, env) for v, s in statements(mode).items()}
            with torch.set_grad_enabled(grad):
                times = side_by_side(timers, min_time)
            base = times["F.conv2d(padding=k-1)"]["median"]
            for v, t in times.items():
                results.append(dict(problem=name, mode=mode, variant=v, median_us=t["median"] * 1e6,
                                    min_us=t["min"] * 1e6, max_us=t["max"] * 1e6,
                                    vs_conv=t["median"] / base))
                print(f"{name:34s} {mode:17s} {v:22s} {t['median'] * 1e6:8.1f} us "
                      f"[{t['min'] * 1e6:7.1f}-{t['max'] * 1e6:7.1f}]  {t['median'] / base:5.2f}x F.conv2d",
                      flush=True)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds per variant and mode (all rounds)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="the first problem only, briefly (a smoke test)")
    ap.add_argument("--out", default=None, help="directory for the JSON (host-overhead-<device>-<date>.json)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("host_overhead.py: --device cuda needs a CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    env = dict(torch=torch.__version__, device=args.device, threads=torch.get_num_threads(),
               machine=platform.machine(), processor=platform.processor() or platform.machine(),
               python=platform.python_version(),
               gpu=torch.cuda.get_device_name() if args.device == "cuda" else None)
    print(f"# fullconv host time per call: torch {env['torch']}, {args.device}, {env['threads']} threads",
          flush=True)
    results = run(args.device, 0.05 if args.quick else args.min_time, torch.float32,
                  PROBLEMS[:1] if args.quick else PROBLEMS)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, f"host-overhead-{args.device}-{datetime.date.today().isoformat()}.json")
        with open(path, "w") as f:
            json.dump(dict(environment=env, results=results), f, indent=1)
        print(f"# wrote {path}")


if __name__ == "__main__":
    main()
