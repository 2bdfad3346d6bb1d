"""fullconv's CUDA kernels executed without a GPU: csrc/cuda/*.cu compiled by the host
compiler against tests/cpp/cuda_emulation.h (threads as fibers with exact barriers, run in a
random order each round; shared memory poisoned before each block; WMMA at matrix level with
the GPU's alignment rules, every lane's arguments compared, TF32 operands checked rounded;
ldmatrix and mma.sync as warp-wide instructions with the PTX fragment layouts, every
ldmatrix checked free of shared-memory bank conflicts; wgmma with its descriptors' swizzled
layouts, operands unchanged and fenced for the async proxy until retired) and run by
tests/cpp/cuda_emulation_test.cpp against the double reference of the definition: tiled
implicit-GEMM (WMMA, mma.sync and wgmma tiles) and direct kernels, every dtype (float32 also on TF32), forward with bias and
the residual epilogue and non-finite weights, grad_input, grad_weight with and without
split-K (empty slices included).

What this cannot show (timing, the hardware's own fragment layout, memory-model effects
between warps) is left to `make gpu-check` on a GPU."""
import concurrent.futures
import glob
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_HOME = os.environ.get("CUDA_HOME", "/usr/local/cuda")


def test_cuda_kernels_emulated(tmp_path):
    include = os.path.join(CUDA_HOME, "include")
    if not os.path.exists(os.path.join(include, "cuda_fp16.h")):
        pytest.skip(f"no CUDA headers under {include} (the CUDA kernels are not built here either)")
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        pytest.fail("no C++ compiler found (needed to build the extension anyway)")
    exe = tmp_path / "cuda_emulation_test"
    csrc = os.path.join(ROOT, "csrc")
    flags = ["-std=c++17", "-O2", "-Wall", "-Werror", "-Wno-unknown-pragmas",
             # the flags torch's CUDA builds use: no implicit half/bfloat16 conversions
             "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
             "-I", csrc, "-I", include]
    # every CUDA unit of the extension (the tiles are compiled once per dtype), as C++ against
    # the emulation, and the test driver; compiled side by side, then linked
    units = sorted(glob.glob(os.path.join(csrc, "cuda", "*.cu")))
    assert any(u.endswith("implicit_gemm_dispatch.cu") for u in units) and len(units) >= 6, units
    flags += ["-include", os.path.join(ROOT, "tests", "cpp", "cuda_emulation.h")]
    jobs = [[cxx, *flags, "-x", "c++", "-c", u, "-o", str(tmp_path / (os.path.basename(u) + ".o"))] for u in units]
    jobs.append([cxx, *flags, "-c", os.path.join(ROOT, "tests", "cpp", "cuda_emulation_test.cpp"),
                 "-o", str(tmp_path / "cuda_emulation_test.o")])
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for proc in pool.map(lambda cmd: subprocess.run(cmd, capture_output=True, text=True), jobs):
            assert proc.returncode == 0, " ".join(proc.args) + "\n" + proc.stderr[-4000:]
    subprocess.run([cxx, *(str(tmp_path / (os.path.basename(u) + ".o")) for u in units),
                    str(tmp_path / "cuda_emulation_test.o"), "-o", str(exe)], check=True)
    result = subprocess.run([str(exe), "8"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " 0 failures" in result.stdout
    launches = int(result.stdout.split(" kernel launches")[0].split()[-1])
    assert launches > 100


def test_mainloop_probe_builds_compile(tmp_path):
    """benchmarks/probe/mainloop_probe.sh builds the float16 tiles with their copies, their math
    or their whole main loop left out (FULLCONV_IGEMM_PROBE 1, 2, 3) on a GPU machine; here those
    builds compile against the emulation, so that a change of the kernels cannot break them
    unseen."""
    include = os.path.join(CUDA_HOME, "include")
    if not os.path.exists(os.path.join(include, "cuda_fp16.h")):
        pytest.skip(f"no CUDA headers under {include}")
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    flags = ["-std=c++17", "-O1", "-Wall", "-Werror", "-Wno-unknown-pragmas", "-D__CUDA_NO_HALF_OPERATORS__",
             "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-I", os.path.join(ROOT, "csrc"),
             "-I", include, "-include", os.path.join(ROOT, "tests", "cpp", "cuda_emulation.h"), "-x", "c++"]
    unit = os.path.join(ROOT, "benchmarks", "probe", "mainloop_probe_unit.cu")
    jobs = [[cxx, *flags, f"-DFULLCONV_IGEMM_PROBE={m}", f"-DFULLCONV_IGEMM_NS=probe{m}", "-c", unit,
             "-o", str(tmp_path / f"probe{m}.o")] for m in (1, 2, 3)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for proc in pool.map(lambda cmd: subprocess.run(cmd, capture_output=True, text=True), jobs):
            assert proc.returncode == 0, " ".join(proc.args) + "\n" + proc.stderr[-4000:]
    script = subprocess.run(["bash", "-n", os.path.join(ROOT, "benchmarks", "probe", "mainloop_probe.sh")],
                            capture_output=True, text=True)
    assert script.returncode == 0, script.stderr


def test_mma_ladder_emulated(tmp_path):
    """benchmarks/probe/mma_ladder.cu (the float16 main loop rebuilt a part at a time on a plain
    GEMM, timed on a GPU by mma_ladder.sh) runs every rung of each tile kind here against the
    emulation, its whole-loop rung checked against a double reference on GEMMs with partial
    tiles; where nvcc is present it also compiles for the GPU (sm_90a), so that the device build
    cannot break unseen. The wgmma rungs (csrc/cuda/warpgroup_mma.cuh) run against the
    emulation's model of their shared-memory layout; ptxas must keep their accumulators in
    registers (no spills) and their products pipelined (no C7514-style "wgmma serialized"
    performance warnings)."""
    include = os.path.join(CUDA_HOME, "include")
    if not os.path.exists(os.path.join(include, "cuda_fp16.h")):
        pytest.skip(f"no CUDA headers under {include}")
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    source = os.path.join(ROOT, "benchmarks", "probe", "mma_ladder.cu")
    defines = ["-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
               "-I", os.path.join(ROOT, "csrc")]
    jobs = [[cxx, "-std=c++17", "-O1", "-Wall", "-Werror", "-Wno-unknown-pragmas", *defines, "-I", include,
             "-include", os.path.join(ROOT, "tests", "cpp", "cuda_emulation.h"), "-x", "c++", source,
             "-o", str(tmp_path / "ladder")]]
    nvcc = shutil.which("nvcc") or os.path.join(CUDA_HOME, "bin", "nvcc")
    if os.path.exists(nvcc):
        jobs.append([nvcc, "-std=c++17", "-O3", "-gencode=arch=compute_90a,code=sm_90a", "--expt-relaxed-constexpr",
                     "-Xptxas", "-v", *defines, "-c", source, "-o", str(tmp_path / "ladder_gpu.o")])
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        procs = list(pool.map(lambda cmd: subprocess.run(cmd, capture_output=True, text=True), jobs))
    for proc in procs:
        assert proc.returncode == 0, " ".join(proc.args) + "\n" + proc.stderr[-4000:]
    if len(procs) > 1:
        ptxas = procs[1].stderr
        assert "wgmma_ladder_kernel" in ptxas
        assert "Potential Performance Loss" not in ptxas, ptxas[-4000:]
        spills = re.findall(r"(\d+) bytes spill stores", ptxas)
        assert spills and all(n == "0" for n in spills), ptxas[-4000:]
        # the wgmma kernels' accumulators in registers: no stack frame either
        frames = re.findall(r"Compiling entry function '[^']*wgmma_ladder_kernel[^']*'.*?(\d+) bytes stack frame",
                            ptxas, flags=re.S)
        assert len(frames) == 18 and all(n == "0" for n in frames), ptxas[-4000:]
    result = subprocess.run([str(tmp_path / "ladder")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "(emulated): 0 failures" in result.stdout, result.stdout + result.stderr
    assert "wgmma 128x256 s4: 0 failures" in result.stdout, result.stdout
    script = subprocess.run(["bash", "-n", os.path.join(ROOT, "benchmarks", "probe", "mma_ladder.sh")],
                            capture_output=True, text=True)
    assert script.returncode == 0, script.stderr


def test_wgmma_tiles_compile_for_hopper(tmp_path):
    """The extension's wgmma tiles (FULLCONV_CUDA_TILES=wgmma / wgmma-wide: WgmmaMath, the
    float16/bfloat16 channels-last forward and grad_input) as nvcc builds them for sm_90a: two
    kernels per dtype (128 x 128 and 128 x 256),
    accumulators in registers (no stack frame, no spills) and products left asynchronous (no
    "Potential Performance Loss" note of serialized wgmma). The emulation above runs them; this
    is what it cannot see."""
    nvcc = shutil.which("nvcc") or os.path.join(CUDA_HOME, "bin", "nvcc")
    if not os.path.exists(nvcc):
        pytest.skip("no nvcc")
    csrc = os.path.join(ROOT, "csrc")
    jobs = [[nvcc, "-std=c++17", "-O3", "-gencode=arch=compute_90a,code=sm_90a", "-DFULLCONV_SM90A_BUILT=1",
             "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
             "-I", csrc, "-Xptxas", "-v", "-c", os.path.join(csrc, "cuda", f"implicit_gemm_{d}.cu"),
             "-o", str(tmp_path / f"{d}.o")] for d in ("f16", "bf16")]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        procs = list(pool.map(lambda cmd: subprocess.run(cmd, capture_output=True, text=True), jobs))
    for proc in procs:
        assert proc.returncode == 0, " ".join(proc.args) + "\n" + proc.stderr[-4000:]
        log = proc.stderr
        assert "Potential Performance Loss" not in log, log[-4000:]
        assert "warning" not in log, log[-4000:]
        entries = re.findall(r"Compiling entry function '([^']*9WgmmaMath[^']*)'.*?(\d+) bytes stack frame, "
                             r"(\d+) bytes spill stores, (\d+) bytes spill loads", log, flags=re.S)
        # 128 x 128 (wgmma) and 128 x 256 (wgmma-wide)
        assert sorted(re.search(r"9WgmmaMathI\w*?_Li(\d+)E", e[0]).group(1) for e in entries) == ["128", "256"], entries
        assert all(e[1:] == ("0", "0", "0") for e in entries), entries
