"""A small workload for Nsight Compute: tiled passes of two ResNet layers, once per tiles kind.

The 3x3 convolutions of ResNet-18's layer 1 (64 -> 64 channels, 56x56, batch 32) and layer 3
(256 -> 256 channels, 14x14, batch 64) as full convolutions in float16 (channels-last): the
forward and grad_input on the mma.sync tiles of at most 64 columns (mma-narrow, auto's choice)
and on the 256-row tiles (mma-wide: 256 x 64 on layer 1, 256 x 128 with 64 x 64 per warp on
layer 3), and layer 1's grad_weight on mma-narrow; then the forward of the GEMM core of
cuda_gemm_core.py (1x1, 1024 -> 1024 channels, 14x14, batch 64) on both tiles kinds. Each is run once unprofiled (warm-up, weight
packing, allocator), then once between cudaProfilerStart/Stop, so that

    ncu --clock-control none --profile-from-start off --kernel-name regex:gemm \\
        --section SpeedOfLight --section Occupancy --section WarpStateStats ... \\
        python benchmarks/cuda_profile.py

reports exactly one launch of each tiled kernel, labelled by the line printed before it.
Without ncu it simply runs (and checks each forward against cuDNN's padded convolution).
(Entry 26 of benchmarks/NOTES.md profiled the WMMA base tiles and the float32 tiles.)
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fullconv  # noqa: E402

# (label, (N, C, K, H=W, kernel), quick shape, dtype, tiles kinds, passes)
RUNS = [
    ("rn18 layer1", (32, 64, 64, 56, 3), (2, 16, 16, 8, 3), torch.float16, ("mma-narrow", "mma-wide"),
     ("forward", "grad_input")),
    ("rn18 layer1", (32, 64, 64, 56, 3), (2, 16, 16, 8, 3), torch.float16, ("mma-narrow",), ("grad_weight",)),
    ("rn18 layer3", (64, 256, 256, 14, 3), (2, 32, 136, 6, 3), torch.float16, ("mma-narrow", "mma-wide"),
     ("forward", "grad_input")),
    # the GEMM core of cuda_gemm_core.py (a 1x1 convolution through the tiles: no taps to skip)
    ("gemm core", (64, 1024, 1024, 14, 1), (2, 64, 136, 6, 1), torch.float16, ("mma-narrow", "mma-wide"),
     ("forward",)),
]


def main():
    if not torch.cuda.is_available():
        sys.exit("cuda_profile.py: no CUDA device")
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    quick = "--quick" in sys.argv[1:]
    os.environ["FULLCONV_CUDA_ALGORITHM"] = "igemm"
    for label, shape, quick_shape, dtype, tiles_kinds, passes in RUNS:
        n, c, k, hw, ks = quick_shape if quick else shape
        x = torch.randn(n, c, hw, hw, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = (torch.randn(k, c, ks, ks, device="cuda") / (ks * ks * c) ** 0.5).to(dtype)
        gy = torch.randn(n, k, hw + ks - 1, hw + ks - 1, device="cuda", dtype=dtype)
        ref = F.conv2d(x.float(), w.float(), padding=ks - 1)
        for tiles in tiles_kinds:
            os.environ["FULLCONV_CUDA_TILES"] = tiles
            for p in passes:
                mask = {"grad_input": [True, False, False], "grad_weight": [False, True, False]}.get(p)
                if mask is None:
                    def run():
                        return fullconv.full_conv2d(x, w)
                else:
                    def run(mask=mask):
                        return torch.ops.fullconv.full_conv_backward(gy, x, w, [1, 1], [1, 1], 1, mask)
                out = run()
                if p == "forward":
                    err = (out.float() - ref).abs().max().item() / ref.abs().max().item()
                    assert err < 3e-2, f"{label} {dtype} {tiles} forward: relative error {err:.3g}"
                torch.cuda.synchronize()
                print(f"== profiled next: {label} {str(dtype).replace('torch.', '')} {p} tiles={tiles} "
                      f"(N={n} C={c} K={k} {hw}x{hw}, {ks}x{ks})", flush=True)
                torch.cuda.profiler.start()
                run()
                torch.cuda.synchronize()
                torch.cuda.profiler.stop()
    print("cuda_profile: done", flush=True)


if __name__ == "__main__":
    main()
