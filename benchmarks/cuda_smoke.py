"""Small CUDA workload for compute-sanitizer (memcheck, racecheck): every kernel of both
families (direct and tiled implicit GEMM, the latter also reading channels-last copies with
cp.async; forward, grad_input, grad_weight with and without split-K) in every dtype (float32
also on TF32), with stride, dilation, groups, 1-D/2-D/3-D, odd sizes that leave partial
tiles, and a non-finite weight; float16/bfloat16 also on the mma.sync tiles
(FULLCONV_CUDA_TILES=mma, mma-narrow, mma-wide), float32 on the wide FMA tiles (simt-wide).
--quick (for racecheck, which checks shared memory and is slow on the kernels that use it):
the tiled kernels in float32 and float16, and the direct kernels in float32 on the cases of
at most 4 input channels per group (their register-blocked forward, grad_input and
grad_weight stage operands in shared memory).
Each run is reported as it ends, so a run cut short by a time limit shows how far it got."""
import os
import sys

import torch

import fullconv


def main():
    assert torch.cuda.is_available(), "cuda_smoke.py needs a GPU"
    torch.manual_seed(0)
    cases = [
        (fullconv.full_conv1d, (2, 4, 13), (6, 2, 3), 2, 2, 2),
        (fullconv.full_conv2d, (2, 3, 7, 5), (4, 3, 3, 2), (1, 2), (2, 1), 1),
        (fullconv.full_conv2d, (1, 8, 9, 9), (8, 1, 3, 3), 1, 1, 8),
        (fullconv.full_conv3d, (1, 2, 3, 4, 5), (2, 1, 2, 3, 1), (2, 1, 1), 1, 2),
        (fullconv.full_conv2d, (2, 40, 9, 11), (70, 20, 3, 3), (2, 1), 1, 2),
        (fullconv.full_conv2d, (4, 64, 12, 12), (130, 64, 3, 3), 1, 1, 1),
        # channel counts in whole 16-byte vectors: the channels-last (cp.async) kernels, for a
        # channels_last input too; more than 64 output and input channels: 128-column mma tiles
        (fullconv.full_conv2d, (2, 64, 10, 9), (72, 64, 3, 3), (2, 1), 1, 1),
        (fullconv.full_conv2d, (2, 136, 7, 6), (144, 136, 3, 3), 1, 1, 1),
        (fullconv.full_conv2d, (2, 64, 10, 9, "channels_last"), (80, 32, 3, 3), 1, (1, 2), 2),
        # 264 output channels: under mma-wide every pass on the 256 x 128 tiles (grad_weight's
        # rows are the output channels)
        (fullconv.full_conv2d, (1, 72, 6, 5), (264, 72, 3, 3), 1, 1, 1),
        # few input channels: the direct register-blocked kernels (an RGB stem; a 1-D layer with
        # rows of two warp segments), their grad_weight in slices
        (fullconv.full_conv2d, (2, 3, 11, 40), (20, 3, 7, 7), 2, 1, 1),
        (fullconv.full_conv1d, (1, 2, 700), (32, 2, 5), 3, 2, 1),
    ]
    tensor_cores = torch.cuda.get_device_capability()[0] >= 8
    runs = [(a, d, False, "base") for a in ("direct", "igemm")
            for d in (torch.float64, torch.float32, torch.float16, torch.bfloat16)
            if a == "direct" or tensor_cores or d in (torch.float64, torch.float32)]
    runs += [("igemm", torch.float32, True, "base")] if tensor_cores else []
    runs += [("igemm", torch.float32, False, "simt-wide")]
    runs += [("igemm", d, False, t) for d in (torch.float16, torch.bfloat16) for t in ("mma", "mma-narrow", "mma-wide")
             if tensor_cores]
    quick = "--quick" in sys.argv[1:]
    if quick:
        runs = [r for r in runs if (r[0] == "igemm" and r[1] in (torch.float32, torch.float16))
                or (r[0] == "direct" and r[1] == torch.float32)]
    for i, (algorithm, dtype, tf32, tiles) in enumerate(runs):
        os.environ["FULLCONV_CUDA_ALGORITHM"] = algorithm
        os.environ["FULLCONV_CUDA_TILES"] = tiles
        torch.backends.cudnn.allow_tf32 = tf32
        for fn, xs, ws, stride, dilation, groups in cases:
            if quick and algorithm == "direct" and xs[1] // groups > 4:
                continue
            x = torch.randn([e for e in xs if not isinstance(e, str)], device="cuda", dtype=dtype)
            if "channels_last" in xs:
                x = x.contiguous(memory_format=torch.channels_last)
            x.requires_grad_()
            w = torch.randn(ws, device="cuda", dtype=dtype, requires_grad=True)
            b = torch.randn(ws[0], device="cuda", dtype=dtype, requires_grad=True)
            y = fn(x, w, b, stride, dilation, groups)
            torch.autograd.grad(y.float().square().sum(), (x, w, b))
        w = torch.randn(4, 3, 3, 3, device="cuda", dtype=dtype)
        w[0, 0, 0, 0] = float("inf")
        fullconv.full_conv2d(torch.randn(1, 3, 5, 5, device="cuda", dtype=dtype), w)
        torch.cuda.synchronize()
        print(f"run {i + 1}/{len(runs)}: {algorithm} {str(dtype).replace('torch.', '')}"
              f"{' tf32' if tf32 else ''} tiles={tiles}", flush=True)
    torch.cuda.synchronize()
    print(f"cuda_smoke: ok ({len(runs)} algorithm/dtype runs x {len(cases) + 1} cases)")


if __name__ == "__main__":
    main()
