"""Tensor-core work of the tiled CUDA kernels per layer, counted without a GPU.

For every conv layer of the F-Conv ResNet-18 / ResNet-50 (224x224, batch 64), the Red-Green
net and a 3-D ResNet-18 layer, this counts the multiply-adds the tiled float16/bfloat16 kernels
issue in each pass (csrc/implicit_gemm.h's own tiles, tap skipping, residue classes and tap
boxes, through benchmarks/tile_work.cpp) and compares them with
  useful  the real products of full convolution (weight x actual input element), and
  padded  what a padded convolution computes (cuDNN's F.conv2d(padding=k-1): every tap at
          every output position, forward, grad_input and grad_weight alike).
useful/tiled is the kernels' tile efficiency; padded/tiled > 1 means fewer tensor-core
multiply-adds than the padded baseline. Counts, not times: what memory traffic, occupancy and
the tensor cores' rate make of them is for `make gpu-check`. Every pass is counted as tiled,
also where FULLCONV_CUDA_ALGORITHM=auto runs the direct kernels instead (grad_input with
fewer than 16 input channels per group: the stems' grad_input).

    python benchmarks/tile_work.py [--out benchmarks/results/tile-work.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
import shapes  # noqa: E402
from fullconv.ops import full_output_size  # noqa: E402

PASSES = ("forward", "grad_input", "grad_weight")


def build(tmp):
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        sys.exit("tile_work.py: no C++ compiler")
    exe = os.path.join(tmp, "tile_work")
    subprocess.run([cxx, "-std=c++17", "-O2", "-I", os.path.join(ROOT, "csrc"), os.path.join(HERE, "tile_work.cpp"),
                    "-o", exe], check=True)
    return exe


def padded_macs(nd, n, cin, cout, k, s, d, g, L):
    out = full_output_size(L, k, s, d)
    return n * cout * (cin // g) * (k * out) ** nd


def suite():
    layers = shapes.unique(shapes.resnet18_full_layers(224, 64))
    layers += shapes.red_green_layers(200)
    layers.append(("r3d-18 layer2 conv 3x3x3", 3, 32, 128, 128, 3, 1, 1, 1, 16))
    layers += shapes.unique(shapes.resnet50_full_layers(224, 64))
    return layers


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="JSON file for the table")
    args = ap.parse_args(argv)
    layers = suite()
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(tmp)
        text = "\n".join(" ".join(str(v) for v in layer[1:]) for layer in layers) + "\n"
        out = subprocess.run([exe], input=text, capture_output=True, text=True, check=True).stdout.split("\n")
    rows = []
    print(f"{'layer':<30}{'useful GMAC':>12}{'padded/useful':>14}   "
          + "".join(f"{p + ' useful/tiled':>24}{'padded/tiled':>13}" for p in PASSES))
    for layer, line in zip(layers, out):
        tiled = dict(zip(PASSES, map(float, line.split())))
        useful = shapes.useful_macs(*layer[1:])
        padded = padded_macs(*layer[1:])
        rows.append({"name": layer[0], "shape": layer[1:], "useful": useful, "padded": padded, "tiled": tiled})
        print(f"{layer[0]:<30}{useful / 1e9:>12.2f}{padded / useful:>14.3f}   "
              + "".join(f"{useful / tiled[p]:>24.3f}{padded / tiled[p]:>13.3f}" for p in PASSES))
    summary = {}
    for net in ("rn18", "rn50"):
        rs = [r for r in rows if r["name"].startswith(net)]
        summary[net] = {p: {"useful/tiled (all layers)": sum(r["useful"] for r in rs) / sum(r["tiled"][p] for r in rs),
                            "padded/tiled (all layers)": sum(r["padded"] for r in rs) / sum(r["tiled"][p] for r in rs),
                            "padded/tiled min": min(r["padded"] / r["tiled"][p] for r in rs)}
                        for p in PASSES}
    print()
    for net, per in summary.items():
        print(net + " (unique layers, summed): " + "; ".join(
            f"{p} useful/tiled {v['useful/tiled (all layers)']:.3f}, padded/tiled {v['padded/tiled (all layers)']:.3f}"
            f" (min {v['padded/tiled min']:.3f})" for p, v in per.items()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"tiles": "128x64, BK 32 (float16/bfloat16); grad_weight 64x64 for <= 64 output channels per group",
                       "summary": summary, "layers": rows}, f, indent=1)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
