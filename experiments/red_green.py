"""Table 1: the Red-Green experiment — does a CNN classify by colour order or by location?

Class 0 puts red left of green in the top half, class 1 green left of red in the bottom half
(fullconv.data.red_green). The "similar" test set follows the training distribution; in the
"dissimilar" set both blocks move to the other class's half, so only the colour order is
left to classify by. Network: four 3x3 convolutions (3->32 s1, 32->32 s2, 32->64 s2,
64->64 s2), no bias, ReLU, no BatchNorm, global max pool, Linear(64, 2), in four variants:
`valid` (no padding), `same_zero` (padding 1), `same_circular` (a same-size circular
convolution), `full_zero` (fullconv.FullConv2d). Adadelta (lr 1, rho 0.9, eps 1e-6,
weight decay 5e-5), batch 200, up to 50 epochs, early stopping after 9 epochs without a
better validation loss, testing the best-validation checkpoint; 10 seeds. Unlike the
paper's code, train / validation / test splits are drawn independently.

    python -m experiments.red_green [--quick] [--out DIR] [--device cpu|cuda] [--seeds N]
"""
from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

import fullconv
from fullconv.data import make_red_green_splits

from . import common

NAME = "red_green"
VARIANTS = ("valid", "same_zero", "same_circular", "full_zero")
PAPER = {
    "valid": {"similar": {"mean": 100.0, "std": 0.0}, "dissimilar": {"mean": 0.2, "std": 0.1}},
    "same_zero": {"similar": {"mean": 99.8, "std": 0.1}, "dissimilar": {"mean": 8.4, "std": 0.7}},
    "same_circular": {"similar": {"mean": 73.7, "std": 1.0}, "dissimilar": {"mean": 73.7, "std": 1.0}},
    "full_zero": {"similar": {"mean": 89.7, "std": 0.5}, "dissimilar": {"mean": 89.7, "std": 0.5}},
    "note": "Table 1, accuracy % (mean ± std over 10 runs); the paper's val/similar splits overlapped train",
}
LAYERS = ((3, 32, 1), (32, 32, 2), (32, 64, 2), (64, 64, 2))


def conv_layer(variant, cin, cout, stride):
    if variant == "full_zero":
        return fullconv.FullConv2d(cin, cout, 3, stride=stride, bias=False)
    if variant == "valid":
        return nn.Conv2d(cin, cout, 3, stride=stride, padding=0, bias=False)
    mode = "circular" if variant == "same_circular" else "zeros"
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode=mode, bias=False)


class RedGreenNet(nn.Module):
    def __init__(self, variant: str):
        super().__init__()
        self.convs = nn.ModuleList(conv_layer(variant, *layer) for layer in LAYERS)
        self.fc = nn.Linear(64, 2)

    def forward(self, x):
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.fc(x.amax(dim=(-2, -1)))


def evaluate(model, data, batch=500):
    images, labels = data
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(labels), batch):
            out = model(images[i:i + batch])
            loss += F.cross_entropy(out, labels[i:i + batch], reduction="sum").item()
            correct += (out.argmax(1) == labels[i:i + batch]).sum().item()
    return 100.0 * correct / len(labels), loss / len(labels)


def train_one(variant, splits, seed, epochs, patience, device):
    torch.manual_seed(seed)
    model = RedGreenNet(variant).to(device)
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.9, eps=1e-6, weight_decay=5e-5)
    x, y = splits.train
    g = torch.Generator().manual_seed(seed)
    best, best_state, since, used = float("inf"), None, 0, 0
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 200):
            idx = order[i:i + 200]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        used = epoch + 1
        _, val_loss = evaluate(model, splits.val)
        if val_loss < best:
            best, best_state, since = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            since += 1
            if since >= patience:
                break
    train_time = time.perf_counter() - t0
    model.load_state_dict(best_state)
    return {"similar": evaluate(model, splits.similar)[0], "dissimilar": evaluate(model, splits.dissimilar)[0],
            "train_time_s": train_time, "epochs": used}


def plot(path, results):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.2
    for j, metric in enumerate(("similar", "dissimilar")):
        xs = [i + (j - 0.5) * 2 * width for i in range(len(VARIANTS))]
        ax.bar(xs, [results[v][metric]["mean"] for v in VARIANTS], 2 * width * 0.9,
               yerr=[results[v][metric]["std"] for v in VARIANTS], label=f"ours: {metric}",
               color="tab:green" if metric == "similar" else "tab:purple")
        ax.scatter(xs, [PAPER[v][metric]["mean"] for v in VARIANTS], marker="_", s=400, color="black",
                   zorder=3, label="paper" if j == 0 else None)
    ax.set_xticks(range(len(VARIANTS)))
    ax.set_xticklabels(["V (valid)", "S-zero", "S-circ", "F-zero"])
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Red-Green: similar vs dissimilar test set")
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(results, config):
    lines = ["# Red-Green (paper Table 1)", "",
             f"{config['seeds']} seeds; train/val/test {config['n_train']}/{config['n_val']}/{config['n_test']} "
             f"(independent splits); up to {config['epochs']} epochs, patience {config['patience']}"
             + (" (--quick protocol)" if config["quick"] else "") + ".", "",
             "| variant | similar (ours) | similar (paper) | dissimilar (ours) | dissimilar (paper) | train time / run (s) | epochs |",
             "|---|---|---|---|---|---|---|"]
    for v in VARIANTS:
        r, p = results[v], PAPER[v]
        lines.append(f"| {v} | {common.fmt(r['similar'])} | {common.fmt(p['similar'])} | "
                     f"{common.fmt(r['dissimilar'])} | {common.fmt(p['dissimilar'])} | "
                     f"{common.fmt(r['train_time_s'])} | {common.fmt(r['epochs'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = common.parser(__doc__.splitlines()[0], default_seeds=10)
    args = ap.parse_args(argv)
    device = common.check_device(args.device)
    if args.quick:
        config = dict(seeds=args.seeds or 3, n_train=1000, n_val=500, n_test=500, epochs=12, patience=4)
    else:
        config = dict(seeds=args.seeds or 10, n_train=2000, n_val=1000, n_test=1000, epochs=50, patience=9)
    config.update(quick=args.quick, batch=200, optimizer="Adadelta(lr=1.0, rho=0.9, eps=1e-6, weight_decay=5e-5)")
    runs = {v: [] for v in VARIANTS}
    bar = common.progress(total=config["seeds"] * len(VARIANTS), desc="red-green runs")
    for seed in range(config["seeds"]):
        splits = make_red_green_splits(config["n_train"], config["n_val"], config["n_test"], seed=seed)
        splits = type(splits)(*[tuple(t.to(device) for t in s) for s in
                                (splits.train, splits.val, splits.similar, splits.dissimilar)])
        for v in VARIANTS:
            runs[v].append(train_one(v, splits, seed, config["epochs"], config["patience"], device))
            bar.update(1)
    bar.close()
    results = {v: {m: common.summarise([r[m] for r in rs]) for m in ("similar", "dissimilar", "train_time_s", "epochs")}
               for v, rs in runs.items()}
    md = markdown(results, config)
    path = common.write_results(args.out, NAME, config, common.environment(device), results, PAPER, md)
    plot(path.replace(".json", ".png"), results)
    print(md)
    print(f"wrote {path} (+ .md, .png)")
    return results


if __name__ == "__main__":
    main()
