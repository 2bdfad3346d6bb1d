"""A small workload for Nsight Compute: each tiled pass of one ResNet-18 layer once per tiles kind.

ResNet-18's layer-1 3x3 convolution (64 -> 64 channels, 56x56, batch 32) as a full
convolution: the forward, grad_input and grad_weight kernels in float16 (channels-last) on the
base and mma-narrow tiles, and the float32 forward and grad_input on the base and simt-wide
tiles. Each is run once unprofiled (warm-up, weight packing, allocator), then once between
cudaProfilerStart/Stop, so that

    ncu --clock-control none --profile-from-start off --kernel-name regex:gemm \\
        --section SpeedOfLight --section Occupancy --section WarpStateStats ... \\
        python benchmarks/cuda_profile.py

reports exactly one launch of each tiled kernel, labelled by the line printed before it.
Without ncu it simply runs (and checks each result against cuDNN's padded convolution).
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fullconv  # noqa: E402

# (dtype, tiles kinds, passes)
RUNS = [
    (torch.float16, ("base", "mma-narrow"), ("forward", "grad_input", "grad_weight")),
    (torch.float32, ("base", "simt-wide"), ("forward", "grad_input")),
]


def main():
    if not torch.cuda.is_available():
        sys.exit("cuda_profile.py: no CUDA device")
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    n, c, k, hw = (2, 16, 16, 8) if "--quick" in sys.argv[1:] else (32, 64, 64, 56)
    os.environ["FULLCONV_CUDA_ALGORITHM"] = "igemm"
    for dtype, tiles_kinds, passes in RUNS:
        x = torch.randn(n, c, hw, hw, device="cuda", dtype=dtype)
        if dtype != torch.float32:
            x = x.contiguous(memory_format=torch.channels_last)
        w = (torch.randn(k, c, 3, 3, device="cuda") / (9 * c) ** 0.5).to(dtype)
        gy = torch.randn(n, k, hw + 2, hw + 2, device="cuda", dtype=dtype)
        ref = F.conv2d(x.float(), w.float(), padding=2)
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
                    assert err < 3e-2, f"{dtype} {tiles} forward: relative error {err:.3g}"
                torch.cuda.synchronize()
                print(f"== profiled next: {str(dtype).replace('torch.', '')} {p} tiles={tiles} "
                      f"(N={n} C={c} K={k} {hw}x{hw}, 3x3)", flush=True)
                torch.cuda.profiler.start()
                run()
                torch.cuda.synchronize()
                torch.cuda.profiler.stop()
    print("cuda_profile: done", flush=True)


if __name__ == "__main__":
    main()
