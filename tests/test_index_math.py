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


def test_tile_work_counts(tmp_path):
    # benchmarks/tile_work.py counts the tensor-core multiply-adds of each pass with the
    # kernels' own index math. Its invariants: never fewer than the useful products; grad_input
    # (residue classes) and grad_weight (tap boxes, 64-row tiles for 64 channels) exactly the
    # useful products on wide layers; the stem's grad_weight in its flat form well above the
    # 4.7% a 64-column tile of 3 channels would give.
    import sys
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import shapes
    import tile_work
    exe = tile_work.build(str(tmp_path))
    layers = [("l1", 2, 4, 64, 64, 3, 1, 1, 1, 56), ("l2/2", 2, 4, 64, 128, 3, 2, 1, 1, 58),
              ("stem", 2, 2, 3, 64, 7, 2, 1, 1, 64), ("grouped", 2, 2, 32, 64, 3, 1, 2, 2, 15),
              ("3d", 3, 2, 16, 32, 3, 1, 1, 1, 8)]
    text = "\n".join(" ".join(map(str, l[1:])) for l in layers) + "\n"
    out = subprocess.run([exe], input=text, capture_output=True, text=True, check=True).stdout.split()
    counts = [tuple(map(float, out[3 * i:3 * i + 3])) for i in range(len(layers))]
    for layer, (fwd, gi, gw) in zip(layers, counts):
        useful = shapes.useful_macs(*layer[1:])
        assert min(fwd, gi, gw) >= useful, layer[0]
    # l1: 4 * 56^2 rows fill whole 128-row tiles, so exact; l2/2: only partial tiles and
    # partial reduction chunks on top of the useful products
    (_, gi1, gw1), (_, gi2, gw2) = counts[0], counts[1]
    assert gi1 == shapes.useful_macs(*layers[0][1:]) == gw1
    assert gi2 / shapes.useful_macs(*layers[1][1:]) < 1.03 and gw2 / shapes.useful_macs(*layers[1][1:]) < 1.03
    assert shapes.useful_macs(*layers[2][1:]) / counts[2][2] > 0.5
