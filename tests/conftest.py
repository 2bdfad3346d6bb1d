import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import fullconv  # noqa: E402,F401  (registers the ops)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# Reference convolutions on the GPU in true float32 (cuDNN would otherwise use TF32).
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


def pytest_configure(config):
    # pytest-xdist's mark (known here with or without the plugin): tests that need most of the
    # GPU's memory share one worker, so that they never run at the same time
    config.addinivalue_line("markers", "xdist_group(name): run on the same pytest-xdist worker")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


# The register-blocked kernels exist where the CPU has AVX2 + FMA (test_errors checks the
# forced path's error elsewhere).
BLOCKED = torch.ops.fullconv._cpu_blocked_available()
# blocked: the CPU's widest build (AVX-512 where present), inputs copied to channels last where
# the heuristic says so; -inplace: every input read in its own layout; -avx2: the AVX2 build
# (on AVX-512 machines).
ALGORITHMS = ["auto", "gemm", "direct"] + (["blocked", "blocked-inplace", "blocked-avx2-inplace"] if BLOCKED else [])
# CUDA kernel families: auto (the per-pass heuristic), the direct kernels, the tiled
# implicit-GEMM kernels (with channels-last reads where the shape allows), the tiled kernels
# gathering from the usual layout only (FULLCONV_CUDA_ALGORITHM).
CUDA_ALGORITHMS = ["auto", "direct", "igemm", "igemm-gather"]
# CUDA joins the parametrisations where a GPU is present (tests/test_cuda.py reports a clean
# skip where it is not), each family forced in turn.
# (The reference grids' channel counts rarely come in the 16-byte vectors of the channels-last
# reads, so there igemm-gather would repeat igemm: it runs in tests/test_cuda.py's layer tests.)
BACKENDS = [f"cpu-{a}" for a in ALGORITHMS] + (
    [f"cuda-{a}" for a in CUDA_ALGORITHMS if a != "igemm-gather"] if "cuda" in DEVICES else [])
# FULLCONV_TEST_BACKENDS=cuda (make gpu-check) spends a GPU machine's short time on the CUDA
# paths: the reference grids run the CUDA families only, CPU-path parametrisations the
# default path only (every CPU path is tested by `make test` on every machine).
if os.environ.get("FULLCONV_TEST_BACKENDS") == "cuda" and "cuda" in DEVICES:
    BACKENDS = [b for b in BACKENDS if b.startswith("cuda-")]
    ALGORITHMS = ["auto"]


def require_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


def cpu_algorithm_env(name):
    """Environment for a CPU path name: auto | gemm | direct | blocked[-avx2|-avx512][-inplace|-copy]."""
    algorithm, *options = name.split("-")
    env = {"FULLCONV_CPU_ALGORITHM": algorithm, "FULLCONV_CPU_BLOCKED_INPUT": "auto",
           "FULLCONV_CPU_BLOCKED_ISA": "auto"}
    for o in options:
        env["FULLCONV_CPU_BLOCKED_ISA" if o.startswith("avx") else "FULLCONV_CPU_BLOCKED_INPUT"] = o
    return env


def set_cpu_algorithm(monkeypatch, name):
    for k, v in cpu_algorithm_env(name).items():
        monkeypatch.setenv(k, v)


@pytest.fixture(params=ALGORITHMS)
def cpu_algorithm(request, monkeypatch):
    """Forces each CPU formulation (GEMM + col2im, direct, blocked) so every path meets the reference,
    not only the one the heuristic picks."""
    set_cpu_algorithm(monkeypatch, request.param)
    return request.param


def backend_env(name):
    """(device, environment) of a backend name: cpu-<cpu path> or cuda-<auto|direct|igemm|igemm-gather>."""
    dev, algorithm = name.split("-", 1)
    if dev == "cuda":
        return "cuda", {"FULLCONV_CUDA_ALGORITHM": algorithm}
    return "cpu", cpu_algorithm_env(algorithm)


@pytest.fixture(params=CUDA_ALGORITHMS)
def cuda_algorithm(request, monkeypatch):
    """Forces each CUDA kernel family (auto, direct, igemm, igemm-gather) for the test."""
    monkeypatch.setenv("FULLCONV_CUDA_ALGORITHM", request.param)
    return request.param


@pytest.fixture(params=BACKENDS)
def device(request, monkeypatch):
    """Every kernel path: the CPU formulations and the CUDA kernel families (where a GPU is
    present), forced one by one. Returns the device to run on."""
    dev, env = backend_env(request.param)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return dev


@pytest.fixture(params=DEVICES)
def any_device(request):
    """cpu, and cuda where present."""
    return request.param
