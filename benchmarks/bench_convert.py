"""Converted networks: fullconv.convert (FullConv2d + fused residual epilogue) vs the same
network built the authors' way (nn.Conv2d(padding=k-1) + F.pad/ZeroPad2d residuals, add,
ReLU), and fullconv's convolutions without the fused epilogue (isolates its saving).
Train step (forward, backward, SGD step) and eval step (forward, BatchNorm folded into the
fused epilogue), side by side in one run; medians (min-max) of torch.utils.benchmark.

    python benchmarks/bench_convert.py [--size 64] [--batch 16] [--models resnet18,resnet50]
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fullconv  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import side_by_side, timer  # noqa: E402


def set_fused(model, fused):
    for m in model.modules():
        if hasattr(m, "fullconv_shortcut_pad"):
            m.fullconv_fused = fused


def authors_style(fmodel):
    """The converted network with every FullConv2d swapped for nn.Conv2d(padding=k-1) (a
    padded convolution, oneDNN/cuDNN) and the unfused F.pad + add + ReLU residuals."""
    model = copy.deepcopy(fmodel)
    for name, m in list(model.named_modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, fullconv.FullConv2d):
                conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                 child.padding, child.dilation, child.groups, child.bias is not None)
                conv.load_state_dict(child.state_dict())
                setattr(m, child_name, conv)
    set_fused(model, False)
    return model


def variants(name):
    import torchvision
    torch.manual_seed(0)
    fused = fullconv.convert(getattr(torchvision.models, name)(num_classes=10))
    unfused = copy.deepcopy(fused)
    set_fused(unfused, False)
    return {"fullconv (fused)": fused, "fullconv (unfused)": unfused, "authors (padded conv)": authors_style(fused)}


def make_step(model, x, y, train):
    if train:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.no_grad():
                model(x)
    return step


def measure(models, x, y, train, min_time):
    """{variant: {median, min, max}} of one step of each model, timed side by side."""
    return side_by_side({v: timer("step()", {"step": make_step(m, x, y, train)}) for v, m in models.items()},
                        min_time)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,resnet50")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--min-time", type=float, default=3.0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args(argv)
    env = {"machine": platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
           "date": datetime.datetime.now().isoformat(timespec="seconds")}
    print(f"# converted networks, {args.size}x{args.size}, batch {args.batch}, torch {env['torch']}, "
          f"{env['threads']} threads ({env['machine']})")
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))
    results = {}
    for name in args.models.split(","):
        models = variants(name)
        # the three variants compute the same function
        ref = None
        for v, m in models.items():
            m.eval()
            with torch.no_grad():
                out = m(x)
            ref = out if ref is None else ref
            torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)
        for mode, train in (("train step", True), ("eval step", False)):
            row = measure(models, x, y, train, args.min_time)
            base = row["authors (padded conv)"]["median"]
            results[f"{name} {mode}"] = row
            for v, t in row.items():
                print(f"{name:<10}{mode:<12}{v:<24}{t['median'] * 1e3:10.1f} ms  "
                      f"(min {t['min'] * 1e3:.1f}, max {t['max'] * 1e3:.1f})  speed-up vs authors {base / t['median']:.2f}x")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"convert-cpu-{env['machine']}-{env['threads']}t-{datetime.date.today().isoformat()}.json")
    with open(path, "w") as f:
        json.dump({"environment": env, "config": vars(args), "results": results}, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
