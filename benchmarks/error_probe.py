"""Does every C++ argument check reach Python as an exception on this machine?

Each case calls a fullconv operator with one bad argument in a fresh Python process (so a
crash ends that case only) and reports one of: ok (the expected exception and message),
wrong (another exception or message), crash (the process died, with its signal). The cases
differ in what the C++ message formats (strings only, an integer, a shape, a dtype), in the
device and in the operator, so a crash points at what triggers it. torch's own C++ errors
run first, as a control.

  python benchmarks/error_probe.py [--json OUT] [--backtrace DIR] [--only cpu|cuda] [--jobs N]

--backtrace DIR: for the first crashing case, reruns it under cuda-gdb (batch mode; it also
debugs programs without GPU code) or gdb, whichever exists, and writes the backtrace there.
Exit status: 0 when every case is ok, 1 otherwise.
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRELUDE = """
import faulthandler, os, re, sys
faulthandler.enable()
import torch
import fullconv
dev = sys.argv[1]
x = torch.randn(2, 4, 5, 5, device=dev)
w = torch.randn(6, 4, 3, 3, device=dev)
op = torch.ops.fullconv
def expect(exc, fragment, fn):
    try:
        fn()
    except exc as e:
        if re.search(fragment, str(e)):
            print("PROBE-OK"); return
        print("PROBE-WRONG message:", str(e)[:300]); return
    except BaseException as e:
        print("PROBE-WRONG", type(e).__name__, str(e)[:300]); return
    print("PROBE-WRONG no exception")
"""

# (name, devices, environment, statement run after PRELUDE)
CASES = [
    ("torch's own C++ error (control)", ("cpu", "cuda"), {},
     "expect(RuntimeError, 'size of tensor', lambda: torch.ones(2, device=dev) + torch.ones(3, device=dev))"),
    ("torch's own C++ error with a shape (control)", ("cpu", "cuda"), {},
     "expect(RuntimeError, r\"shape '\\[4\\]' is invalid\", lambda: torch.ones(2, 3, device=dev).view(4))"),
    ("message of strings only (bad FULLCONV_*_ALGORITHM)", ("cpu", "cuda"),
     {"FULLCONV_CPU_ALGORITHM": "fastest", "FULLCONV_CUDA_ALGORITHM": "fastest"},
     "expect(ValueError, 'ALGORITHM', lambda: op.full_conv(x, w, None, [1, 1], [1, 1], 1))"),
    ("message with an integer (groups=0)", ("cpu", "cuda"), {},
     "expect(ValueError, 'groups must be positive', lambda: op.full_conv(x, w, None, [1, 1], [1, 1], 0))"),
    ("message with an int list (stride [0, 1])", ("cpu", "cuda"), {},
     "expect(ValueError, 'stride must be positive', lambda: op.full_conv(x, w, None, [0, 1], [1, 1], 1))"),
    ("message with a shape (2-D weight)", ("cpu", "cuda"), {},
     "expect(ValueError, 'weight must have 3, 4 or 5 dims', "
     "lambda: op.full_conv(x, torch.randn(6, 4, device=dev), None, [1, 1], [1, 1], 1))"),
    ("message with a dtype (float64 input)", ("cpu", "cuda"), {},
     "expect(TypeError, 'same dtype', lambda: op.full_conv(x.double(), w, None, [1, 1], [1, 1], 1))"),
    ("padded_add shape check", ("cpu", "cuda"), {},
     "expect(ValueError, 'does not match', lambda: op.padded_add(torch.randn(2, 4, 8, 8, device=dev), "
     "torch.randn(2, 4, 6, 6, device=dev), [2, 2], False))"),
    ("backward grad_output shape check", ("cpu", "cuda"), {},
     "expect(ValueError, \"grad_output must have the output's shape\", "
     "lambda: op.full_conv_backward(torch.randn(2, 6, 7, 6, device=dev), x, w, [1, 1], [1, 1], 1, [True, True, True]))"),
    ("public API check (Python side)", ("cpu",), {},
     "expect(ValueError, 'weight must be 4-D', lambda: fullconv.full_conv2d(x, torch.randn(6, 4, 3, device=dev)))"),
]


def run_case(code, device, env, timeout=120):
    full_env = dict(os.environ, **env, PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, "-c", PRELUDE + code, device], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode < 0 or (proc.returncode != 0 and "Fatal Python error" in out):
        status = f"crash (signal {-proc.returncode})" if proc.returncode < 0 else f"crash (rc {proc.returncode})"
    elif "PROBE-OK" in proc.stdout:
        status = "ok"
    else:
        line = next((ln for ln in out.splitlines() if "PROBE-WRONG" in ln), out.strip().splitlines()[-1:] or ["?"])
        status = "wrong: " + (line if isinstance(line, str) else line[0])[:300]
    return status, out, full_env


def backtrace(code, device, env, out_dir):
    debugger = shutil.which("cuda-gdb") or shutil.which("gdb")
    if debugger is None:
        return "no cuda-gdb or gdb on this machine"
    script = os.path.join(out_dir, "error_probe_case.py")
    with open(script, "w") as f:
        f.write(PRELUDE + code + "\n")
    # no debuginfod lookups (no network on GPU machines) and no auto-loaded scripts: start fast
    cmd = [debugger, "-batch", "-iex", "set debuginfod enabled off", "-iex", "set auto-load off",
           "-ex", "set pagination off", "-ex", "run", "-ex", "bt 40", "-ex", "x/6i $pc",
           "-ex", "info sharedlibrary", "--args", sys.executable, script, device]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
        text = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        text = f"{debugger} timed out\n{e.stdout or ''}{e.stderr or ''}"
    path = os.path.join(out_dir, "error_probe_backtrace.txt")
    with open(path, "w") as f:
        f.write(" ".join(cmd) + "\n\n" + text)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--backtrace", metavar="DIR", help="debugger backtrace of the first crash into DIR")
    ap.add_argument("--only", choices=["cpu", "cuda"])
    ap.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1), help="cases run at once")
    args = ap.parse_args()
    import torch
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if args.only:
        devices = [d for d in devices if d == args.only]
    jobs = [(name, device, env, code) for name, case_devices, env, code in CASES
            for device in devices if device in case_devices]

    def run_job(job):
        name, device, env, code = job
        try:
            return run_case(code, device, env)
        except subprocess.TimeoutExpired:
            return "wrong: timed out", "", None

    # one process per case, several at once (each spends its time importing torch)
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        outcomes = list(pool.map(run_job, jobs))
    results, first_crash = [], None
    for (name, device, env, code), (status, out, full_env) in zip(jobs, outcomes):
        results.append({"case": name, "device": device, "status": status})
        print(f"{device:5s} {status:24.24s} {name}", flush=True)
        if status.startswith("crash"):
            tail = [ln for ln in out.splitlines() if ln.strip()][-6:]
            print("      | " + "\n      | ".join(tail), flush=True)
            if first_crash is None:
                first_crash = (code, device, full_env)
    summary = {"torch": torch.__version__, "python": sys.version.split()[0], "results": results,
               "all_ok": all(r["status"] == "ok" for r in results)}
    if first_crash is not None and args.backtrace:
        os.makedirs(args.backtrace, exist_ok=True)
        summary["backtrace"] = backtrace(*first_crash, args.backtrace)
        print("backtrace of the first crash:", summary["backtrace"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    bad = [r for r in results if r["status"] != "ok"]
    print(f"error_probe: {len(results) - len(bad)}/{len(results)} cases ok")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
