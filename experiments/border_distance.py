"""Exp. 1: how far from the image border can a CNN exploit absolute location?

A natural-image patch sits at the top-left (class 0) or bottom-right (class 1) of a zero
canvas, surrounded by a black border of b pixels (fullconv.data.border). A network with a
global max pool must classify which corner: only the image border can tell. Models:
ResNet-18 and DenseNet-121 (torchvision) and a BagNet-33-style ResNet (33-px receptive
field), each with global max pooling and a 2-way linear head, as S-Conv (torchvision's
padding) and F-Conv (fullconv.convert), in the settings `scratch` (all weights trained),
`frozen_random` (random backbone frozen, head trained) and `frozen_pretrained` (needs
--weights-dir with torchvision state_dicts resnet18.pth / densenet121.pth; reported as not
run otherwise). SGD (lr 1e-3, Nesterov momentum 0.9, weight decay 5e-5), batch 8,
ReduceLROnPlateau on the validation loss, best-validation checkpoint tested.

    python -m experiments.border_distance [--quick] [--out DIR] [--device cpu|cuda] [--seeds N]
        [--image-dir DIR] [--weights-dir DIR] [--models ...] [--borders ...]
"""
from __future__ import annotations

import copy
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

import fullconv
from fullconv.data import border_location_dataset, source_images

from . import common

NAME = "border_distance"
BORDERS = (0, 16, 32, 64, 128, 256, 512)
MODELS = ("resnet18", "bagnet33", "densenet121")
SETTINGS = ("scratch", "frozen_random", "frozen_pretrained")
PAPER = {"note": "Exp. 1 (Fig. 4 of the paper, S-Conv models): all models classify the location "
                 "near the border; ResNet-18 still does at a 128-px border. Read off the figure; the "
                 "paper reports no per-border table.",
         "resnet18_same_scratch": {"border_128": "well above chance"}}


def bagnet33(num_classes=2):
    """A compact BagNet-33-style ResNet: a 3x3 stem and four Bottleneck blocks whose 3x3
    convolutions (strides 2, 2, 2, 1) give a 33-pixel receptive field; 1x1 elsewhere."""
    from torchvision.models.resnet import Bottleneck

    layers, cin = [nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)], 64
    for planes, stride in ((16, 2), (32, 2), (64, 2), (128, 1)):
        down = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
        layers.append(Bottleneck(cin, planes, stride, down))
        cin = planes * 4
    return nn.Sequential(*layers), cin


def backbone(name):
    import torchvision
    if name == "resnet18":
        m = torchvision.models.resnet18()
        return nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4), 512
    if name == "densenet121":
        m = torchvision.models.densenet121()
        return nn.Sequential(m.features, nn.ReLU(inplace=True)), 1024
    if name == "bagnet33":
        return bagnet33()
    raise ValueError(f"unknown model {name!r}")


class LocationProbe(nn.Module):
    """backbone -> global max pool -> Linear(channels, 2)."""

    def __init__(self, features, channels):
        super().__init__()
        self.features = features
        self.fc = nn.Linear(channels, 2)

    def forward(self, x):
        return self.fc(self.features(x).amax(dim=(-2, -1)))


def build(model_name, conv, setting, weights_dir, seed, example):
    torch.manual_seed(seed)
    features, channels = backbone(model_name)
    if setting == "frozen_pretrained":
        path = os.path.join(weights_dir, f"{model_name}.pth")
        import torchvision
        full = getattr(torchvision.models, model_name)()
        full.load_state_dict(torch.load(path, map_location="cpu"))
        features, channels = backbone_from(full, model_name)
    if conv == "full":
        # the 2x2 stem pool of the authors, aligned residuals and concatenations
        if model_name == "resnet18":
            features[3] = nn.MaxPool2d(2, 2)
        features = fullconv.convert(features, stem_pool="keep", example_input=example)
    model = LocationProbe(features, channels)
    if setting.startswith("frozen"):
        for p in model.features.parameters():
            p.requires_grad_(False)
    return model


def backbone_from(m, name):
    if name == "resnet18":
        return nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4), 512
    return nn.Sequential(m.features, nn.ReLU(inplace=True)), 1024


def evaluate(model, data, device, batch=32):
    x, y = data
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            out = model(x[i:i + batch].to(device))
            loss += F.cross_entropy(out, y[i:i + batch].to(device), reduction="sum").item()
            correct += (out.argmax(1).cpu() == y[i:i + batch]).sum().item()
    return 100.0 * correct / len(y), loss / len(y)


def train_eval(model, splits, epochs, lr, device, seed):
    model.to(device)
    frozen = not any(p.requires_grad for p in model.features.parameters())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-5)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=3)
    x, y = splits["train"]
    g = torch.Generator().manual_seed(seed)
    best, best_state = float("inf"), None
    for _ in range(epochs):
        model.train()
        if frozen:
            model.features.eval()  # a frozen backbone keeps its BatchNorm statistics
        for idx in torch.randperm(len(y), generator=g).split(8):
            loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        _, val_loss = evaluate(model, splits["val"], device)
        sched.step(val_loss)
        if val_loss < best:
            best, best_state = val_loss, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return evaluate(model, splits["test"], device)[0]


def plot(path, results, borders):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    variants = [v for v in results if results[v]]
    fig, ax = plt.subplots(figsize=(8, 4))
    for v in variants:
        ys = [results[v][f"border_{b}"]["mean"] for b in borders]
        ax.plot(range(len(borders)), ys, marker="o", ls="--" if "_full_" in v else "-", label=v)
    ax.axhline(50, color="gray", lw=1, ls=":")
    ax.set_xticks(range(len(borders)))
    ax.set_xticklabels([str(b) for b in borders])
    ax.set_xlabel("black border added on every side (px)")
    ax.set_ylabel("location accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Where is the patch? (Exp. 1)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = common.parser(__doc__.splitlines()[0], default_seeds=1)
    ap.add_argument("--image-dir", default=None, help="your own folder of images (split 60/20/20 by file)")
    ap.add_argument("--weights-dir", default=None, help="folder with torchvision state_dicts for frozen_pretrained")
    ap.add_argument("--models", default=None, help=f"comma-separated subset of {MODELS}")
    ap.add_argument("--borders", default=None, help="comma-separated border sizes")
    ap.add_argument("--settings", default=None, help=f"comma-separated subset of {SETTINGS}")
    args = ap.parse_args(argv)
    device = common.check_device(args.device)
    if args.quick:
        cfg = dict(models=["resnet18", "bagnet33"], borders=[0, 32], settings=["scratch", "frozen_random"],
                   n_train=96, n_val=32, n_test=64, epochs=4, lr=1e-2, patch=28, canvas=60, seeds=args.seeds or 1)
    else:
        cfg = dict(models=list(MODELS), borders=list(BORDERS), settings=list(SETTINGS), n_train=1000, n_val=1000,
                   n_test=1000, epochs=40, lr=1e-3, patch=56, canvas=120, seeds=args.seeds or 1)
    if args.models:
        cfg["models"] = args.models.split(",")
    if args.borders:
        cfg["borders"] = [int(b) for b in args.borders.split(",")]
    if args.settings:
        cfg["settings"] = args.settings.split(",")
    cfg.update(quick=args.quick, image_source=args.image_dir or "scikit-image bundled photographs",
               optimizer="SGD nesterov momentum 0.9, wd 5e-5, batch 8, ReduceLROnPlateau")
    sources = {s: source_images(s, args.image_dir) for s in ("train", "val", "test")}
    runs, not_run = {}, []
    jobs = [(m, c, st) for m in cfg["models"] for c in ("same", "full") for st in cfg["settings"]]
    bar = common.progress(total=len(jobs) * len(cfg["borders"]) * cfg["seeds"], desc="border runs")
    for model_name, conv, setting in jobs:
        variant = f"{model_name}_{conv}_{setting}"
        if setting == "frozen_pretrained" and not (args.weights_dir and os.path.exists(
                os.path.join(args.weights_dir, f"{model_name}.pth"))):
            not_run.append(variant)
            bar.update(len(cfg["borders"]) * cfg["seeds"])
            continue
        if setting == "frozen_pretrained" and model_name == "bagnet33":
            not_run.append(variant)
            bar.update(len(cfg["borders"]) * cfg["seeds"])
            continue
        runs[variant] = {}
        for border in cfg["borders"]:
            accs = []
            for seed in range(cfg["seeds"]):
                splits = {s: border_location_dataset(cfg[f"n_{s}"], s, border, seed, cfg["patch"], cfg["canvas"],
                                                     sources=sources[s]) for s in ("train", "val", "test")}
                example = splits["train"][0][:1]
                t0 = time.perf_counter()
                model = build(model_name, conv, setting, args.weights_dir, seed, example)
                accs.append(train_eval(model, splits, cfg["epochs"], cfg["lr"], device, seed))
                bar.set_postfix_str(f"{variant} b={border}: {accs[-1]:.0f}% ({time.perf_counter() - t0:.0f}s)")
                bar.update(1)
            runs[variant][f"border_{border}"] = common.summarise(accs)
    bar.close()
    lines = ["# Border distance (paper Exp. 1)", "",
             f"Location accuracy (%) on held-out photographs; patch {cfg['patch']} px on a {cfg['canvas']} px canvas, "
             f"{cfg['n_train']}/{cfg['n_val']}/{cfg['n_test']} train/val/test images, {cfg['epochs']} epochs, "
             f"lr {cfg['lr']}, {cfg['seeds']} seed(s)" + (" (--quick protocol: half-size images, short training)" if args.quick else "") + ".",
             "", "| variant | " + " | ".join(f"border {b}" for b in cfg["borders"]) + " |",
             "|---|" + "---|" * len(cfg["borders"])]
    for v, r in runs.items():
        lines.append(f"| {v} | " + " | ".join(common.fmt(r[f'border_{b}'], 0) for b in cfg["borders"]) + " |")
    for v in not_run:
        lines.append(f"| {v} | " + " | ".join("not run" for _ in cfg["borders"]) + " |")
    lines += ["", "Paper: " + PAPER["note"],
              "Not run: frozen_pretrained needs local torchvision weights (--weights-dir); BagNet-33 has no "
              "torchvision weights." if not_run else ""]
    md = "\n".join(lines) + "\n"
    cfg["not_run"] = not_run
    path = common.write_results(args.out, NAME, cfg, common.environment(device), runs, PAPER, md)
    plot(path.replace(".json", ".png"), runs, cfg["borders"])
    print(md)
    print(f"wrote {path} (+ .md, .png)")


if __name__ == "__main__":
    main()
