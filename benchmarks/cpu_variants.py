"""fullconv's CPU passes under several settings of its internal switches, side by side with
oneDNN, one layer at a time: each round calls every variant once (order reversed every other
round), the first two rounds are warm-up, medians and minima of the rest. One call at a time,
so a page-fault or clock state that one call leaves falls on the next call of every variant
alike (this VM's medians sit 1.1-1.6x above the minima; compare within one run only).

    python benchmarks/cpu_variants.py --variants "FULLCONV_CPU_BF16_TILES=auto;FULLCONV_CPU_BF16_TILES=off" \\
        --pass forward --dtype bfloat16 LAYER [LAYER ...]

A LAYER is name:nd,batch,cin,cout,kernel,stride,dilation,groups,size (square/cubic maps), e.g.
"l1:2,16,64,64,3,1,1,1,28". A variant is comma-separated NAME=VALUE settings ("" for the
defaults). The oneDNN column is ATen's convolution (forward) or convolution_backward with the
same output mask, padding dilation*(kernel-1), in the same dtype.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fullconv  # noqa: E402,F401  (registers the operators)
from timing import WithEnv  # noqa: E402

MASKS = {"forward": None, "grad_input": [True, False, False], "grad_weight": [False, True, False]}


def parse_layer(text: str):
    name, _, spec = text.rpartition(":")
    vals = [int(v) for v in spec.split(",")]
    if len(vals) != 9:
        raise SystemExit(f"layer {text!r}: expected nd,batch,cin,cout,kernel,stride,dilation,groups,size")
    return (name or spec, *vals)


def parse_variants(text: str):
    out = []
    for v in text.split(";"):
        env = {}
        for kv in filter(None, v.split(",")):
            k, _, val = kv.partition("=")
            env[k.strip()] = val.strip()
        out.append((",".join(f"{k}={val}" for k, val in env.items()) or "defaults", env))
    return out


def time_layer(layer, variants, which, dtype, rounds, channels_last=False):
    name, nd, n, cin, cout, k, s, d, g, size = layer
    x = torch.randn(n, cin, *(size,) * nd).to(dtype)
    fmt = {1: torch.contiguous_format, 2: torch.channels_last, 3: torch.channels_last_3d}[nd]
    if channels_last:
        x = x.contiguous(memory_format=fmt)
    w = (torch.randn(cout, cin // g, *(k,) * nd) / (cin // g * k ** nd) ** 0.5).to(dtype)
    b = torch.randn(cout).to(dtype)
    st, dl, pad = [s] * nd, [d] * nd, [d * (k - 1)] * nd
    mask = MASKS[which]
    if mask is None:
        def ours():
            return torch.ops.fullconv.full_conv(x, w, b, st, dl, g)

        def onednn():
            return torch.ops.aten.convolution(x, w, b, st, pad, dl, False, [0] * nd, g)
    else:
        gy = torch.randn_like(torch.ops.fullconv.full_conv(x, w, b, st, dl, g))
        if channels_last:
            gy = gy.contiguous(memory_format=fmt)

        def ours():
            return torch.ops.fullconv.full_conv_backward(gy, x, w, st, dl, g, mask)

        def onednn():
            return torch.ops.aten.convolution_backward(gy, x, w, None, st, pad, dl, False, [0] * nd, g, mask)
    fns = [(label, WithEnv(env, ours)) for label, env in variants] + [("oneDNN", onednn)]
    times = {label: [] for label, _ in fns}
    for r in range(rounds + 2):
        for label, fn in (fns if r % 2 else fns[::-1]):
            t0 = time.perf_counter()
            fn()
            if r >= 2:
                times[label].append(time.perf_counter() - t0)
    return {label: (statistics.median(ts), min(ts)) for label, ts in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("layers", nargs="+", help="name:nd,batch,cin,cout,kernel,stride,dilation,groups,size")
    ap.add_argument("--variants", default="", help="';'-separated variants of ','-separated NAME=VALUE settings")
    ap.add_argument("--pass", dest="which", choices=list(MASKS), default="forward")
    ap.add_argument("--dtype", choices=["float32", "float64", "bfloat16", "float16"], default="float32")
    ap.add_argument("--rounds", type=int, default=14)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--channels-last", action="store_true",
                    help="channels-last input (and grad_output) for both sides (2-D and 3-D layers)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = parse_variants(args.variants)
    dtype = getattr(torch, args.dtype)
    print(f"# {args.which}, {args.dtype}{', channels-last' if args.channels_last else ''}, torch {torch.__version__}, "
          f"{args.threads} threads, {args.rounds} rounds; "
          f"ms: median (min); ratio: oneDNN median / variant median")
    for layer in map(parse_layer, args.layers):
        res = time_layer(layer, variants, args.which, dtype, args.rounds, args.channels_last)
        ref = res["oneDNN"][0]
        cells = [f"{label}: {med * 1e3:.2f} ({mn * 1e3:.2f})" + ("" if label == "oneDNN" else f" = {ref / med:.2f}x")
                 for label, (med, mn) in res.items()]
        print(f"{layer[0]:<14}" + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
