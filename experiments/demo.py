"""`make demo`: the paper's two small experiments in their --quick form, then a side-by-side
CPU timing of one layer.

    python -m experiments.demo [--out DIR]

1. the location toy (Fig. 1/3): one convolution layer classifies where a patch is with
   same padding, and cannot with full padding;
2. Red-Green (Table 1, --quick protocol): the full-convolution network classifies by colour
   order, so its accuracy is the same on the "dissimilar" test set where location misleads;
3. fullconv.full_conv2d vs F.conv2d(padding=k-1) on one ResNet layer.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile

import torch
import torch.nn.functional as F

import fullconv

from . import location_toy, red_green


def time_layer():
    from torch.utils import benchmark
    x = torch.randn(16, 64, 32, 32)
    w = torch.randn(64, 64, 3, 3)
    env = {"x": x, "w": w, "F": F, "fullconv": fullconv}
    threads = torch.get_num_threads()  # Timer would otherwise run one thread
    ours = benchmark.Timer("fullconv.full_conv2d(x, w)", globals=env, num_threads=threads).blocked_autorange(min_run_time=1)
    ref = benchmark.Timer("F.conv2d(x, w, padding=2)", globals=env, num_threads=threads).blocked_autorange(min_run_time=1)
    return ours.median, ref.median


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="where the experiments' files go (default: a temporary folder)")
    args = ap.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="fullconv-demo-")
    print("== 1. location toy (paper Fig. 1/3) ==")
    location_toy.main(["--quick", "--out", out])
    print("\n== 2. Red-Green (paper Table 1), --quick protocol ==")
    red_green.main(["--quick", "--out", out])
    print("== 3. speed ==")
    ours, ref = time_layer()
    print(f"3x3 conv 64->64 on 16x64x32x32, CPU ({platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}):")
    print(f"  fullconv.full_conv2d      {ours * 1e3:8.2f} ms (median)")
    print(f"  F.conv2d(padding=2)       {ref * 1e3:8.2f} ms (median)")
    print(f"  ratio (reference / ours)  {ref / ours:8.2f}x   (benchmarks/bench_cpu.py has the full table)")
    print(f"\nfiles (json, md, png) in {os.path.abspath(out)}")


if __name__ == "__main__":
    main()
