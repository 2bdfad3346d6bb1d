"""Shared plumbing of the experiments: command line, environment record, result files.

Every experiment writes <out>/<name>.json with the layout
  {"experiment", "config", "environment": {torch, device, threads, date},
   "results": {variant: {metric: {"mean", "std", "runs"}}}, "paper": {...}}
plus <name>.md (our numbers beside the paper's) and <name>.png (the figure).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys

import torch

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parser(description: str, default_seeds: int) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="a reduced protocol that runs in minutes on 2 CPU cores")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory (default experiments/results)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--seeds", type=int, default=None, help=f"number of seeds (default {default_seeds})")
    return ap


def check_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    return torch.device(device)


def environment(device) -> dict:
    env = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
           "machine": platform.machine(), "python": platform.python_version(),
           "date": datetime.datetime.now().isoformat(timespec="seconds")}
    if str(device).startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def summarise(runs) -> dict:
    runs = [float(r) for r in runs]
    return {"mean": statistics.fmean(runs) if runs else float("nan"),
            "std": statistics.stdev(runs) if len(runs) > 1 else 0.0, "runs": runs}


def write_results(out_dir: str, name: str, config: dict, env: dict, results: dict, paper: dict,
                  markdown: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    with open(path, "w") as f:
        json.dump({"experiment": name, "config": config, "environment": env, "results": results,
                   "paper": paper}, f, indent=1)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(markdown)
    return path


def fmt(stat: dict | None, digits: int = 1) -> str:
    if stat is None:
        return "not run"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def progress(iterable=None, **kwargs):
    """tqdm progress bar on stderr (a plain iterable when tqdm is missing)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        class _Null:
            def update(self, n=1):
                pass

            def close(self):
                pass

            def __iter__(self):
                return iter(iterable)
        return _Null()
    return tqdm(iterable, file=sys.stderr, **kwargs)
