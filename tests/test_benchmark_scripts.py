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
                            "--tiles", "base,mma,mma-narrow,mma-wide,simt-wide,wgmma,wgmma-wide", "--max-seconds", "1"], tmp_path)
    assert "base/fc" in out and "simt-wide/fc" in out
    row = data["results"][0]
    assert row["dtype"] == "float32"
    # float32 is timed on the base and wide FMA tiles beside the default, in every mode
    for mode in ("forward", "forward+backward", "grad_input", "grad_weight"):
        assert {"fullconv", "fullconv-base", "fullconv-simt-wide", "cudnn"} <= set(row["times_s"][mode]), mode
    # a 3-input-channel stem also times the tiled and the per-element direct kernels beside auto
    assert "igemm/fc" in out and "element/fc" in out
    stem = next(r for r in data["results"] if r["shape"][2] // r["shape"][7] <= 4)
    for mode in ("forward", "forward+backward", "grad_input", "grad_weight"):
        assert {"fullconv-igemm", "fullconv-element"} <= set(stem["times_s"][mode]), mode
    assert "fullconv-igemm" in data["summary"]["forward float32"]


def test_cuda_gemm_core_smoke_on_cpu(tmp_path):
    out, data = run_script(["benchmarks/cuda_gemm_core.py", "--device", "cpu", "--quick", "--dtypes", "float32"],
                           tmp_path)
    labels = {r["label"].split(" C")[0] for r in data["rows"]}
    assert {"fullconv core (channels-last)", "fullconv core, simt-wide tiles", "cuBLAS mm"} <= labels, labels
    # each pass of the 3x3 layer also on the other tiles kinds of the dtype
    assert {"forward fullconv, simt-wide tiles", "grad_input fullconv, simt-wide tiles"} <= {
        r["label"] for r in data["rows"] if r["section"] == "passes"}, data["rows"]


def test_cuda_kernel_times_smoke_on_cpu(tmp_path):
    out, data = run_script(["benchmarks/cuda_kernel_times.py", "--device", "cpu", "--quick", "--dtype", "float16",
                            "--layers", "rn18-l3,rn50-l3-1x1", "--reps", "1"], tmp_path)
    layer = data["layers"]["rn18-l3"]
    assert set(layer) == {"forward", "grad_input", "grad_weight"}
    # the default kernels, cuDNN's and the other tiles kind, each with its time per kernel
    assert set(layer["forward"]) == {"fullconv", "cuDNN", "fullconv mma-wide"}
    for row in layer["forward"].values():
        assert row["kernels_s"] and abs(sum(row["kernels_s"].values()) - row["total_s"]) < 1e-9
    bad = subprocess.run([sys.executable, "benchmarks/cuda_kernel_times.py", "--device", "cpu", "--layers", "rn99"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "unknown layer" in bad.stderr


def test_host_overhead_smoke(tmp_path):
    out, data = run_script(["benchmarks/host_overhead.py", "--quick"], tmp_path)
    variants = {(r["mode"], r["variant"]) for r in data["results"]}
    for mode in ("forward", "forward, grad on", "forward+backward"):
        for v in ("F.conv2d(padding=k-1)", "fullconv.full_conv2d", "FullConv2d module", "raw operator"):
            assert (mode, v) in variants
    assert all(r["median_us"] > 0 for r in data["results"]) and "x F.conv2d" in out


def test_sass_loops_reads_a_listing(tmp_path):
    # a cuobjdump-style listing: setup with one division call, then a loop of two HMMA closed by a
    # backward branch, then the exit
    listing = """
        Function : _Z6kernelv
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   CALL.REL.NOINC 0x200 ;
        /*0020*/                   IMAD R2, R3, R4, RZ ;
        /*0030*/                   LDSM.16.M88.4 R8, [R2] ;
        /*0040*/                   HMMA.16816.F32 R12, R8, R10, R12 ;
        /*0050*/                   HMMA.16816.F32 R16, R8, R10, R16 ;
        /*0060*/               @P0 BRA 0x30 ;
        /*0070*/                   EXIT ;
"""
    path = tmp_path / "k.sass"
    path.write_text(listing)
    proc = subprocess.run([sys.executable, "benchmarks/sass_loops.py", str(path), "--filter", "kernel"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    row = proc.stdout.splitlines()[1].split()
    # total 8, loop 4 (0x30..0x60), 2 HMMA, no call in the loop, no local memory, 3 before it with 1 call
    assert row[1:8] == ["8", "4", "2", "0", "0", "3", "1"], proc.stdout


def test_cpu_tile_widths_smoke():
    # the blocked forward's tile widths side by side (benchmarks/cpu_tile_widths.py)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    for which in ("forward", "grad_weight"):
        proc = subprocess.run([sys.executable, "benchmarks/cpu_tile_widths.py", "--quick", "--rounds", "1",
                               "--threads", "1", "--pass", which], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert f"# blocked {which} tiles" in proc.stdout and "narrow/default, every layer: geomean" in proc.stdout
    assert "FULLCONV_CPU_BLOCKED_TILE" not in os.environ


def test_gpu_scripts_parse_and_followup_needs_a_gpu_build(tmp_path):
    for script in ("benchmarks/gpu_check.sh", "benchmarks/gpu_followup.sh"):
        proc = subprocess.run(["bash", "-n", script], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    import torch
    if torch.cuda.is_available():
        return  # (the follow-up itself runs only on a GPU machine, after gpu-check)
    proc = subprocess.run(["bash", "benchmarks/gpu_followup.sh"], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, OUT=str(tmp_path)), timeout=120)
    assert proc.returncode == 1 and "no CUDA device" in proc.stdout


def test_cpu_variants_smoke():
    # fullconv under two settings beside oneDNN (benchmarks/cpu_variants.py), each pass
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    for which, dtype, layout in (("forward", "bfloat16", []), ("grad_input", "float32", ["--channels-last"]),
                                 ("grad_weight", "float64", [])):
        proc = subprocess.run([sys.executable, "benchmarks/cpu_variants.py", "--rounds", "1", "--threads", "1",
                               "--pass", which, "--dtype", dtype, *layout,
                               "--variants", "FULLCONV_CPU_ALGORITHM=blocked;FULLCONV_CPU_ALGORITHM=gemm",
                               "small:2,2,16,16,3,1,1,1,6", "3-D:3,1,8,8,3,2,1,1,5"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        lines = [ln for ln in proc.stdout.splitlines() if not ln.startswith("#")]
        assert len(lines) == 2 and all("FULLCONV_CPU_ALGORITHM=gemm" in ln and "oneDNN" in ln for ln in lines), proc.stdout


def test_sweep_cpu_smoke(tmp_path):
    out, data = run_script(["benchmarks/sweep_cpu.py", "--problems", "3", "--budget", "0.01", "--seed", "5"], tmp_path)
    assert len(data["rows"]) == 3 and "geometric mean" in out and "worst forward ratios" in out
    for row in data["rows"]:
        assert row["problem"] in out
        for mode in ("forward", "forward+backward"):
            assert row["ratio"][mode] == row["padded_s"][mode] / row["fullconv_s"][mode] > 0
