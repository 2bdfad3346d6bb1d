"""Side-by-side timing shared by the CPU benchmarks; a results file shared by the CUDA probes."""
import datetime
import json
import os
import statistics

import torch
from torch.utils import benchmark

ROUNDS = 3


def timer(stmt, env):
    # torch.utils.benchmark.Timer runs with ONE thread unless told otherwise
    return benchmark.Timer(stmt, globals=env, num_threads=torch.get_num_threads())


def side_by_side(timers, min_time, rounds=ROUNDS):
    """Times every variant of `timers` ({variant: Timer}) side by side: each is warmed up first,
    then `rounds` rounds time every variant in turn (order reversed every other round), so
    drifting machine state (clocks, allocator, caches) falls on all variants alike rather than
    on whichever runs first. Returns {variant: {median, min, max}} over all blocks of all rounds
    (seconds per run)."""
    for t in timers.values():
        t.timeit(2)
    times = {v: [] for v in timers}
    order = list(timers)
    for r in range(rounds):
        for v in (order if r % 2 == 0 else order[::-1]):
            times[v] += timers[v].blocked_autorange(min_run_time=min_time / rounds).times
    return {v: {"median": statistics.median(ts), "min": min(ts), "max": max(ts)} for v, ts in times.items()}


class WithEnv:
    """Runs fn with the environment variables `env` set, then restores them."""

    def __init__(self, env, fn):
        self.env, self.fn = env, fn

    def __call__(self, *args):
        old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            return self.fn(*args)
        finally:
            for k, v in old.items():
                if v is None:
                    del os.environ[k]
                else:
                    os.environ[k] = v


def save_results(out_dir, kind, card, quick, data):
    """Writes data as out_dir/KIND-CARD[-quick]-DATE.json (card's spaces as dashes); returns the
    path, after printing it."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{kind}-{card.replace(' ', '-')}{'-quick' if quick else ''}-"
                                 f"{datetime.date.today().isoformat()}.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    print(f"wrote {path}")
    return path
