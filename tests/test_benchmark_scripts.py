"""The GPU benchmark scripts, smoke-tested on the CPU (`--device cpu --quick`): a GPU session is
short, and a script that fails there wastes it. Each writes its JSON and prints every column."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(args, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, *args, "--out", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    files = [f for f in os.listdir(tmp_path) if f.endswith(".json")]
    assert len(files) == 1, files
    with open(os.path.join(tmp_path, files[0])) as f:
        return proc.stdout, json.load(f)


def test_bench_cuda_smoke_on_cpu(tmp_path):
    out, data = run_script(["benchmarks/bench_cuda.py", "--device", "cpu", "--quick", "--no-gather", "--passes",
                            "--tiles", "base,mma,mma-narrow,simt-wide", "--max-seconds", "1"], tmp_path)
    assert "base/fc" in out and "simt-wide/fc" in out
    row = data["results"][0]
    assert row["dtype"] == "float32"
    # float32 is timed on the base and wide FMA tiles beside the default, in every mode
    for mode in ("forward", "forward+backward", "grad_input", "grad_weight"):
        assert {"fullconv", "fullconv-base", "fullconv-simt-wide", "cudnn"} <= set(row["times_s"][mode]), mode


def test_cuda_gemm_core_smoke_on_cpu(tmp_path):
    out, data = run_script(["benchmarks/cuda_gemm_core.py", "--device", "cpu", "--quick", "--dtypes", "float32"],
                           tmp_path)
    labels = {r["label"].split(" C")[0] for r in data["rows"]}
    assert {"fullconv core (channels-last)", "fullconv core, simt-wide tiles", "cuBLAS mm"} <= labels, labels
