"""`make demo`: full vs same convolution on the one-layer location toy of the paper's Fig. 1,
then a side-by-side CPU timing of one layer.

    python -m fullconv.demo [--seeds N] [--steps N]
"""
from __future__ import annotations

import argparse
import platform

import torch
import torch.nn.functional as F
from torch import nn

import fullconv


def location_images(size=32, patch=8, seed=0):
    """Two grey images: the same random patch at the top-left and at the bottom-right."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(patch, patch, generator=g) * 0.8 + 0.2
    imgs = torch.zeros(2, 1, size, size)
    imgs[0, 0, :patch, :patch] = p
    imgs[1, 0, -patch:, -patch:] = p
    return imgs, torch.tensor([0, 1])


class OneLayer(nn.Module):
    """5x5 conv (no bias), ReLU, global max pool, Linear(1, 2)."""

    def __init__(self, full: bool):
        super().__init__()
        self.conv = fullconv.FullConv2d(1, 1, 5, bias=False) if full else nn.Conv2d(1, 1, 5, padding=2, bias=False)
        self.fc = nn.Linear(1, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).amax(dim=(-2, -1)))


def train_toy(full: bool, seed: int, steps: int) -> tuple[float, float]:
    torch.manual_seed(seed)
    imgs, labels = location_images(seed=seed)
    model = OneLayer(full)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        i = step % 2  # batch 1, alternating
        loss = F.cross_entropy(model(imgs[i:i + 1]), labels[i:i + 1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pooled = torch.relu(model.conv(imgs)).amax(dim=(-2, -1)).flatten()
        acc = (model(imgs).argmax(1) == labels).float().mean().item() * 100
    return acc, (pooled[0] - pooled[1]).abs().item()


def time_layer():
    from torch.utils import benchmark
    x = torch.randn(16, 64, 32, 32)
    w = torch.randn(64, 64, 3, 3)
    env = {"x": x, "w": w, "F": F, "fullconv": fullconv}
    ours = benchmark.Timer("fullconv.full_conv2d(x, w)", globals=env).blocked_autorange(min_run_time=1)
    ref = benchmark.Timer("F.conv2d(x, w, padding=2)", globals=env).blocked_autorange(min_run_time=1)
    return ours.median, ref.median


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args(argv)
    print("fullconv demo: location toy (paper Fig. 1). Two 32x32 images, the same patch top-left "
          "vs bottom-right;\n5x5 conv (no bias) -> ReLU -> global max pool -> Linear(1, 2), "
          f"SGD lr 0.1 momentum 0.9, batch 1, {args.steps} steps.\n")
    print(f"{'variant':<22}{'seed':>5}{'accuracy %':>12}{'|pool(a)-pool(b)|':>20}")
    summary = {}
    for name, full in (("S-Conv (same, pad 2)", False), ("F-Conv (full, pad 4)", True)):
        accs = []
        for seed in range(args.seeds):
            acc, gap = train_toy(full, seed, args.steps)
            accs.append(acc)
            print(f"{name:<22}{seed:>5}{acc:>12.1f}{gap:>20.3g}")
        summary[name] = sum(accs) / len(accs)
    print("\nmean accuracy: " + ", ".join(f"{k}: {v:.1f}%" for k, v in summary.items()))
    print("paper: S-Conv classifies the location perfectly; F-Conv cannot beat chance (50%),\n"
          "because every input pixel meets every filter tap, so both images give the same "
          "pooled value (gap 0).\n")
    ours, ref = time_layer()
    print(f"timing, 3x3 conv 64->64 on 16x64x32x32, CPU ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}):")
    print(f"  fullconv.full_conv2d      {ours * 1e3:8.2f} ms (median)")
    print(f"  F.conv2d(padding=2)       {ref * 1e3:8.2f} ms (median)")
    print(f"  ratio (reference / ours)  {ref / ours:8.2f}x   (benchmarks/bench_cpu.py has the full table)")


if __name__ == "__main__":
    main()
