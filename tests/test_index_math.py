"""The shared index math (csrc/conv_shape.h, used by the CPU and CUDA kernels) against its
defining relation, by brute force in a small C++ program."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_conv_shape_helpers_brute_force(tmp_path):
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        pytest.fail("no C++ compiler found (needed to build the extension anyway)")
    exe = tmp_path / "index_math_test"
    subprocess.run([cxx, "-std=c++17", "-O1", "-Wall", "-Werror", "-I", os.path.join(ROOT, "csrc"),
                    os.path.join(ROOT, "tests", "cpp", "index_math_test.cpp"), "-o", str(exe)],
                   check=True)
    result = subprocess.run([str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failures" in result.stdout


def test_implicit_gemm_views_emulated(tmp_path):
    """The tiled CUDA kernels' index math (csrc/implicit_gemm.h), run by a host emulator with
    the kernels' block decomposition, tap skipping and split-K against the definition."""
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        pytest.fail("no C++ compiler found (needed to build the extension anyway)")
    exe = tmp_path / "implicit_gemm_test"
    subprocess.run([cxx, "-std=c++17", "-O2", "-Wall", "-Werror", "-I", os.path.join(ROOT, "csrc"),
                    os.path.join(ROOT, "tests", "cpp", "implicit_gemm_test.cpp"), "-o", str(exe)],
                   check=True)
    result = subprocess.run([str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failures" in result.stdout
