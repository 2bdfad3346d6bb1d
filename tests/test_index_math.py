"""The shared index math against its defining relation, by brute force in small C++ programs:
csrc/conv_shape.h (used by the CPU and CUDA kernels) and csrc/implicit_gemm.h (the tiled CUDA
kernels' views, run by a host emulator with the kernels' block decomposition, tap skipping and
split-K partition)."""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_and_run(tmp_path, name):
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        pytest.fail("no C++ compiler found (needed to build the extension anyway)")
    exe = tmp_path / name
    subprocess.run([cxx, "-std=c++17", "-O2", "-Wall", "-Werror", "-I", os.path.join(ROOT, "csrc"),
                    os.path.join(ROOT, "tests", "cpp", f"{name}.cpp"), "-o", str(exe)], check=True)
    result = subprocess.run([str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failures" in result.stdout
    return result.stdout


def test_conv_shape_helpers_brute_force(tmp_path):
    build_and_run(tmp_path, "index_math_test")


def test_implicit_gemm_views_emulated(tmp_path):
    out = build_and_run(tmp_path, "implicit_gemm_test")
    # the emulation really skipped chunks and really ran some
    run, skipped = map(int, re.search(r"(\d+) chunks run, (\d+) skipped", out).groups())
    assert run > 0 and skipped > 0
