"""CUDA: registration (checked on every machine that built the CUDA kernels), and on a GPU:
CPU-vs-CUDA agreement, autocast, torch.compile, determinism, a > 2^31-element tensor.
The reference grid, gradcheck and opcheck run on CUDA through the `device` fixtures."""
import os

import pytest
import torch
import torch._C as C

import fullconv
from fullconv.reference import full_conv_reference

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def cuda_kernels_built():
    return all(C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")
               for op in ("fullconv::full_conv", "fullconv::full_conv_backward"))


def test_cuda_kernels_registered_when_built():
    # `make test` builds the CUDA kernels wherever nvcc is present and says so here.
    expect = os.environ.get("FULLCONV_EXPECT_CUDA") == "1" or torch.cuda.is_available()
    if expect:
        assert cuda_kernels_built(), "the CUDA kernels were built but are not registered"
    else:
        pytest.skip("extension built without CUDA (FORCE_CUDA=0 / no nvcc)")


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cfg", [
    (1, 3, 8, 6, (37,), (5,), (2,), (3,), 2),
    (2, 4, 16, 32, (19, 23), (3, 3), (1, 1), (1, 1), 1),
    (2, 2, 32, 32, (15, 16), (3, 3), (2, 2), (2, 1), 32),
    (2, 2, 3, 64, (33, 31), (7, 7), (2, 2), (1, 1), 1),
    (3, 2, 8, 8, (5, 9, 7), (3, 2, 3), (1, 2, 1), (1, 1, 2), 4),
], ids=lambda c: f"{c[0]}d")
def test_cpu_vs_cuda(cfg, dtype):
    nd, n, cin, cout, size, kernel, stride, dilation, groups = cfg
    x = torch.randn(n, cin, *size, dtype=dtype)
    w = torch.randn(cout, cin // groups, *kernel, dtype=dtype)
    b = torch.randn(cout, dtype=dtype)
    fn = {1: fullconv.full_conv1d, 2: fullconv.full_conv2d, 3: fullconv.full_conv3d}[nd]
    leaves_cpu = [t.clone().requires_grad_() for t in (x, w, b)]
    leaves_gpu = [t.cuda().requires_grad_() for t in (x, w, b)]
    y_cpu = fn(*leaves_cpu, stride, dilation, groups)
    y_gpu = fn(*leaves_gpu, stride, dilation, groups)
    gy = torch.randn_like(y_cpu)
    g_cpu = torch.autograd.grad(y_cpu, leaves_cpu, gy)
    g_gpu = torch.autograd.grad(y_gpu, leaves_gpu, gy.cuda())
    tol = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}[dtype]
    for a, bb in zip((y_cpu, *g_cpu), (y_gpu, *g_gpu)):
        scale = max(a.abs().max().item(), 1.0)
        assert (a.double() - bb.cpu().double()).abs().max().item() <= tol * scale


@needs_gpu
def test_cuda_autocast_matches_nn_conv():
    ref = torch.nn.Conv2d(3, 8, 3, padding=2).cuda()
    conv = fullconv.FullConv2d.from_conv(ref)
    x = torch.randn(2, 3, 16, 16, device="cuda")
    with torch.autocast("cuda"):
        y, r = conv(x), ref(x)
    assert y.dtype == r.dtype == torch.float16
    torch.testing.assert_close(y.float(), r.float(), rtol=2e-2, atol=2e-2)


@needs_gpu
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_cuda_compile(backend):
    torch._dynamo.reset()
    model = torch.nn.Sequential(fullconv.FullConv2d(3, 8, 3), torch.nn.ReLU(),
                                fullconv.FullConv2d(8, 4, 3, stride=2)).cuda()
    x = torch.randn(2, 3, 12, 12, device="cuda", requires_grad=True)
    out_c = torch.compile(model, fullgraph=True, backend=backend)(x)
    out_e = model(x)
    torch.testing.assert_close(out_c, out_e)
    gc = torch.autograd.grad(out_c.sum(), x)[0]
    ge = torch.autograd.grad(out_e.sum(), x)[0]
    torch.testing.assert_close(gc, ge)


@needs_gpu
def test_cuda_deterministic():
    torch.use_deterministic_algorithms(True)
    try:
        x = torch.randn(4, 16, 20, 20, device="cuda", requires_grad=True)
        w = torch.randn(32, 16, 3, 3, device="cuda", requires_grad=True)
        runs = []
        for _ in range(2):
            y = fullconv.full_conv2d(x, w, stride=2)
            runs.append((y, *torch.autograd.grad(y.square().sum(), (x, w))))
        for a, b in zip(*runs):
            assert torch.equal(a, b)
    finally:
        torch.use_deterministic_algorithms(False)


@needs_gpu
def test_cuda_more_than_2_31_elements():
    # 64-bit indexing: input of 2^31 elements, output of 3 * 32769^2 > 2^31 elements
    # (about 11 GB in float16).
    free, _ = torch.cuda.mem_get_info()
    if free < (12 << 30):
        pytest.skip("not enough GPU memory for a > 2^31-element case")
    x = torch.zeros(1, 2, 32768, 32768, device="cuda", dtype=torch.float16)
    x[0, 1, -1, -1] = 1.0
    x[0, 0, 0, 0] = 2.0
    w = torch.ones(3, 2, 2, 2, device="cuda", dtype=torch.float16)
    y = fullconv.full_conv2d(x, w)
    assert y.numel() > 2**31
    for c in range(3):
        assert y[0, c, -1, -1].item() == 1.0 and y[0, c, -2, -2].item() == 1.0
        assert y[0, c, 0, 0].item() == 2.0 and y[0, c, 1, 1].item() == 2.0
    assert y.sum(dtype=torch.float32).item() == 36.0
    del y
    x.requires_grad_()
    gx = torch.autograd.grad(fullconv.full_conv2d(x, w[:1]).sum(), x)[0]
    assert gx[0, 1, -1, -1].item() == 4.0
    del y
    torch.cuda.empty_cache()


@needs_gpu
def test_cuda_reference_large_layer():
    x = torch.randn(8, 64, 28, 28, device="cuda", dtype=torch.float64)
    w = torch.randn(64, 64, 3, 3, device="cuda", dtype=torch.float64)
    torch.testing.assert_close(fullconv.full_conv2d(x, w), full_conv_reference(x, w))
