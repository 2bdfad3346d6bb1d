"""CUDA: registration (checked on every machine that built the CUDA kernels), and on a GPU:
CPU-vs-CUDA agreement, autocast, torch.compile, determinism, a > 2^31-element tensor.
The reference grid, gradcheck and opcheck run on CUDA through the `device` fixtures."""
import os
import re

import pytest
import torch
import torch._C as C

import fullconv
from fullconv.reference import full_conv_reference

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def on_gpu(params):
    """A parametrisation that exists only where a GPU is present (elsewhere the test shows
    once as skipped, not once per parameter)."""
    return params if torch.cuda.is_available() else []


def cuda_kernels_built():
    return all(C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")
               for op in ("fullconv::full_conv", "fullconv::full_conv_backward"))


def test_cuda_kernels_registered_when_built():
    # `make test` builds the CUDA kernels wherever nvcc is present and says so here.
    expect = os.environ.get("FULLCONV_EXPECT_CUDA") == "1" or torch.cuda.is_available()
    built = cuda_kernels_built()
    if expect:
        assert built, "the CUDA kernels were built but are not registered"
    elif not built:
        pytest.skip("extension built without CUDA (FORCE_CUDA=0 / no nvcc)")


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cfg", on_gpu([
    (1, 3, 8, 6, (37,), (5,), (2,), (3,), 2),
    (2, 4, 16, 32, (19, 23), (3, 3), (1, 1), (1, 1), 1),
    (2, 2, 32, 32, (15, 16), (3, 3), (2, 2), (2, 1), 32),
    (2, 2, 3, 64, (33, 31), (7, 7), (2, 2), (1, 1), 1),
    (3, 2, 8, 8, (5, 9, 7), (3, 2, 3), (1, 2, 1), (1, 1, 2), 4),
]), ids=lambda c: f"{c[0]}d")
def test_cpu_vs_cuda(cfg, dtype, cuda_algorithm):
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
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cfg", on_gpu([
    # nd, n, cin, cout, size, kernel, stride, dilation, groups
    (2, 2, 3, 64, (37, 41), (7, 7), (2, 2), (1, 1), 1),  # RGB stem: 8 warps of 8 output channels
    (2, 2, 8, 8, (9, 150), (3, 3), (1, 1), (2, 2), 8),  # depthwise, rows of two warp segments
    (1, 3, 4, 6, (300,), (5,), (3,), (2,), 2),  # 2 channels per group, stride 3 against dilation 2
    (3, 1, 6, 10, (5, 6, 7), (3, 3, 3), (2, 1, 2), (1, 1, 1), 1),  # partial channel blocks
    (2, 1, 1, 64, (5, 6), (13, 13), (1, 1), (1, 1), 1),  # over the forward's weight space: per element
]), ids=lambda c: f"{c[0]}d-{c[2]}to{c[3]}")
def test_cuda_direct_blocked_and_per_element(cfg, dtype, monkeypatch):
    # The direct forward, grad_input and grad_weight, register-blocked (default; grad_weight
    # where a layer has at most 4 input and at least 16 output channels per group) and one
    # thread per element (FULLCONV_CUDA_DIRECT=element), against the reference in float64.
    nd, n, cin, cout, size, kernel, stride, dilation, groups = cfg
    monkeypatch.setenv("FULLCONV_CUDA_ALGORITHM", "direct")
    fn = {1: fullconv.full_conv1d, 2: fullconv.full_conv2d, 3: fullconv.full_conv3d}[nd]
    x = torch.randn(n, cin, *size, dtype=torch.float64, device="cuda")
    taps = 1
    for k in kernel:
        taps *= k
    w = torch.randn(cout, cin // groups, *kernel, dtype=torch.float64, device="cuda") / (cin // groups * taps) ** 0.5
    b = torch.randn(cout, dtype=torch.float64, device="cuda")
    y_ref = full_conv_reference(x, w, b, stride, dilation, groups)
    gy = torch.randn_like(y_ref)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    gx_ref, gw_ref = torch.autograd.grad(full_conv_reference(xr, wr, b, stride, dilation, groups), (xr, wr), gy)
    tol = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 3e-2}[dtype]
    for kernels in ("blocked", "element"):
        monkeypatch.setenv("FULLCONV_CUDA_DIRECT", kernels)
        xd, wd = x.to(dtype).requires_grad_(), w.to(dtype).requires_grad_()
        y = fn(xd, wd, b.to(dtype), stride, dilation, groups)
        gx, gw = torch.autograd.grad(y, (xd, wd), gy.to(dtype))
        for got, ref in ((y, y_ref), (gx, gx_ref), (gw, gw_ref)):
            err = (got.double() - ref).abs().max().item()
            assert err <= tol * max(ref.abs().max().item(), 1.0), (kernels, err)
    monkeypatch.setenv("FULLCONV_CUDA_DIRECT", "fast")
    with pytest.raises(ValueError, match="FULLCONV_CUDA_DIRECT"):
        fn(x, w, b, stride, dilation, groups)


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
def test_cuda_deterministic(cuda_algorithm):
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
@pytest.mark.xdist_group("gpu-memory")  # one worker runs these in turn (make gpu-check: --dist loadgroup)
@pytest.mark.parametrize("algorithm,cin,size,gigabytes", [
    ("direct", 2, 32768, 12), ("igemm", 2, 32768, 12),
    # channels in 16-byte vectors: the channels-last (cp.async) kernels, copies of x and grad_out
    ("igemm", 24, 9500, 40),
])
def test_cuda_more_than_2_31_elements(algorithm, cin, size, gigabytes, monkeypatch):
    monkeypatch.setenv("FULLCONV_CUDA_ALGORITHM", algorithm)
    # 64-bit indexing: input of >= 2^31 elements, output of cout * (size + 1)^2 > 2^31 elements
    # (float16).
    free, _ = torch.cuda.mem_get_info()
    if free < (gigabytes << 30):
        pytest.skip("not enough GPU memory for a > 2^31-element case")
    cout = 3 if cin == 2 else cin
    x = torch.zeros(1, cin, size, size, device="cuda", dtype=torch.float16)
    assert x.numel() >= 2**31
    x[0, 1, -1, -1] = 1.0
    x[0, 0, 0, 0] = 2.0
    w = torch.ones(cout, cin, 2, 2, device="cuda", dtype=torch.float16)
    y = fullconv.full_conv2d(x, w)
    assert y.numel() > 2**31
    for c in range(cout):
        assert y[0, c, -1, -1].item() == 1.0 and y[0, c, -2, -2].item() == 1.0
        assert y[0, c, 0, 0].item() == 2.0 and y[0, c, 1, 1].item() == 2.0
    assert y.sum(dtype=torch.float32).item() == 12.0 * cout
    del y
    x.requires_grad_()
    wg = w[:8].clone().requires_grad_()  # 8 output channels: the tiled grad_weight too
    gx, gw = torch.autograd.grad(fullconv.full_conv2d(x, wg).sum(), (x, wg))
    # grad_output is all ones: every input meets every tap of every output channel once, and
    # every weight every input once (channel 0 holds a 2, channel 1 a 1, the rest zeros)
    taps_times_channels = 4.0 * wg.shape[0]
    assert gx[0, 1, -1, -1].item() == taps_times_channels and gx[0, 0, 0, 0].item() == taps_times_channels
    assert gx[0, :, size // 2, ::size // 7].eq(taps_times_channels).all()
    assert gw[:, 0].eq(2.0).all() and gw[:, 1].eq(1.0).all() and gw[:, 2:].eq(0.0).all()
    del gx, gw, x
    torch.cuda.empty_cache()


@needs_gpu
def test_cuda_reference_large_layer():
    x = torch.randn(8, 64, 28, 28, device="cuda", dtype=torch.float64)
    w = torch.randn(64, 64, 3, 3, device="cuda", dtype=torch.float64)
    torch.testing.assert_close(fullconv.full_conv2d(x, w), full_conv_reference(x, w))


# Layers wide enough for whole and partial tiles of the implicit-GEMM kernels (64/128 rows x 64
# columns), several tiles per grid dimension, split-K on grad_weight, tap skipping at tile
# level (small maps), strided residue classes of grad_input.
LAYERS = [
    # nd, batch, cin, cout, size, kernel, stride, dilation, groups
    (2, 8, 64, 64, (14, 14), (3, 3), (1, 1), (1, 1), 1),
    (2, 4, 64, 128, (15, 15), (3, 3), (2, 2), (1, 1), 1),
    (2, 4, 256, 72, (7, 7), (1, 1), (1, 1), (1, 1), 1),
    (2, 2, 96, 130, (7, 9), (3, 3), (1, 2), (1, 1), 1),
    (2, 4, 32, 48, (11, 13), (5, 5), (1, 1), (2, 2), 2),
    (2, 2, 3, 64, (33, 31), (7, 7), (2, 2), (1, 1), 1),
    (3, 2, 16, 32, (6, 7, 5), (3, 3, 3), (1, 1, 1), (1, 1, 1), 1),
    (1, 4, 64, 64, (100,), (7,), (3,), (1,), 1),
]


# dtypes of the layer tests; "tfloat32": float32 with TF32 allowed (torch.backends.cudnn)
LAYER_DTYPES = [torch.float64, torch.float32, "tfloat32", torch.float16, torch.bfloat16]
LAYER_TOL = {torch.float64: 1e-10, torch.float32: 1e-5, "tfloat32": 1e-2, torch.float16: 1e-2, torch.bfloat16: 3e-2}


@needs_gpu
@pytest.mark.parametrize("dtype", LAYER_DTYPES, ids=str)
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
@pytest.mark.parametrize("cfg", on_gpu(LAYERS), ids=lambda c: "x".join(map(str, (c[2], c[3], *c[4], *c[5], *c[6]))))
def test_cuda_layers_against_reference(cfg, dtype, memory_format, cuda_algorithm, monkeypatch):
    nd, n, cin, cout, size, kernel, stride, dilation, groups = cfg
    if memory_format == "channels_last" and nd == 1:
        pytest.skip("no channels-last memory format for 1-D tensors")
    if memory_format == "channels_last" and cuda_algorithm in ("direct", "igemm-gather"):
        pytest.skip("these kernels read a contiguous copy of a channels-last input (tested with auto)")
    if dtype == "tfloat32" and cuda_algorithm == "direct":
        pytest.skip("the direct kernels have no TF32 mode")
    if dtype == "tfloat32":
        if torch.cuda.get_device_capability()[0] < 8:
            pytest.skip("TF32 needs compute capability 8.0")
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    tol = LAYER_TOL[dtype]
    dtype = torch.float32 if dtype == "tfloat32" else dtype
    x = torch.randn(n, cin, *size, dtype=torch.float64, device="cuda")
    w = torch.randn(cout, cin // groups, *kernel, dtype=torch.float64, device="cuda") / (cin // groups * w_taps(kernel)) ** 0.5
    b = torch.randn(cout, dtype=torch.float64, device="cuda")
    leaves = [t.to(dtype) for t in (x, w, b)]
    if memory_format == "channels_last":
        fmt = torch.channels_last if nd == 2 else torch.channels_last_3d
        leaves[0] = leaves[0].contiguous(memory_format=fmt)
    leaves = [t.requires_grad_() for t in leaves]
    fn = {1: fullconv.full_conv1d, 2: fullconv.full_conv2d, 3: fullconv.full_conv3d}[nd]
    y = fn(*leaves, stride, dilation, groups)
    if memory_format == "channels_last":
        assert y.is_contiguous(memory_format=fmt), "output layout differs from F.conv's for a channels-last input"
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, gy)
    if memory_format == "channels_last":
        assert grads[0].is_contiguous(memory_format=fmt), "grad_input does not take the input's layout"
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    y_ref = full_conv_reference(*ref_leaves, stride, dilation, groups)
    ref_grads = torch.autograd.grad(y_ref, ref_leaves, gy.double())
    for name, a, r in zip(("output", "grad_input", "grad_weight", "grad_bias"), (y, *grads), (y_ref, *ref_grads)):
        scale = max(r.abs().max().item(), 1.0)
        err = (a.double() - r).abs().max().item() / scale
        assert err <= tol, f"{name}: relative error {err:.3g} > {tol}"


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda_channels_last_views(dtype, monkeypatch):
    # The channels-last path reads 16-byte vectors: a channels-last view at an odd element
    # offset (not 16-byte aligned) and a sliced batch give what a fresh tensor gives.
    monkeypatch.setenv("FULLCONV_CUDA_ALGORITHM", "igemm")
    base = torch.randn(5 * 64 * 12 * 12 + 1, device="cuda", dtype=dtype)
    odd = base[1:].view(5, 12, 12, 64).permute(0, 3, 1, 2)  # channels_last strides, offset 1
    assert odd.is_contiguous(memory_format=torch.channels_last) and odd.data_ptr() % 16 != 0
    w = (torch.randn(64, 64, 3, 3, device="cuda") / 24).to(dtype)
    for x in (odd, odd[1:4], odd[:, :, 2:9]):
        expect = fullconv.full_conv2d(x.contiguous(), w)
        torch.testing.assert_close(fullconv.full_conv2d(x, w), expect, rtol=0, atol=0)
        xg = x.detach().requires_grad_()
        gy = torch.randn_like(expect)
        gx = torch.autograd.grad(fullconv.full_conv2d(xg, w), xg, gy)[0]
        xc = x.detach().contiguous().requires_grad_()
        torch.testing.assert_close(gx, torch.autograd.grad(fullconv.full_conv2d(xc, w), xc, gy)[0], rtol=0, atol=0)


def w_taps(kernel):
    out = 1
    for k in kernel:
        out *= k
    return out


@needs_gpu
def test_cuda_tf32_follows_cudnn_flag(monkeypatch):
    # float32 runs on TF32 tensor cores only while torch.backends.cudnn.allow_tf32 allows it
    if torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("TF32 needs compute capability 8.0")
    monkeypatch.setenv("FULLCONV_CUDA_ALGORITHM", "igemm")
    x = torch.randn(4, 64, 16, 16, device="cuda")
    w = torch.randn(64, 64, 3, 3, device="cuda") / 24
    ref = full_conv_reference(x.double(), w.double())
    strict = fullconv.full_conv2d(x, w)
    torch.backends.cudnn.allow_tf32 = True
    try:
        fast = fullconv.full_conv2d(x, w)
    finally:
        torch.backends.cudnn.allow_tf32 = False
    assert (strict.double() - ref).abs().max().item() < 1e-4
    assert (fast.double() - ref).abs().max().item() < 3e-2
    assert not torch.equal(fast, strict), "TF32 allowed but the float32 result is unchanged"


@needs_gpu
def test_cuda_algorithm_switch_refuses_unknown_value(monkeypatch):
    monkeypatch.setenv("FULLCONV_CUDA_ALGORITHM", "fastest")
    with pytest.raises(ValueError, match="FULLCONV_CUDA_ALGORITHM"):
        fullconv.full_conv2d(torch.randn(1, 2, 5, 5, device="cuda"), torch.randn(3, 2, 3, 3, device="cuda"))


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=str)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
def test_cuda_row_regions_change_no_value(dtype, memory_format, monkeypatch):
    # The tiled forward runs border rows apart from interior ones so that border tiles skip the
    # taps that meet only padding (FULLCONV_CUDA_ROW_REGIONS, default 1): the products it skips
    # are zeros, so the result is the plain row order's (and the reference's).
    monkeypatch.setenv("FULLCONV_CUDA_ALGORITHM", "igemm")
    x = torch.randn(8, 64, 9, 11, device="cuda", dtype=dtype).contiguous(memory_format=memory_format)
    w = (torch.randn(64, 64, 3, 5, device="cuda") / 24).to(dtype)
    b = torch.randn(64, device="cuda", dtype=dtype)
    y = fullconv.full_conv2d(x, w, b)
    monkeypatch.setenv("FULLCONV_CUDA_ROW_REGIONS", "0")
    plain = fullconv.full_conv2d(x, w, b)
    torch.testing.assert_close(y, plain, rtol=0, atol=0)
    ref = full_conv_reference(x.double(), w.double(), b.double())
    assert (y.double() - ref).abs().max().item() <= (1e-10 if dtype == torch.float64 else 2e-2) * ref.abs().max().item()
    monkeypatch.setenv("FULLCONV_CUDA_ROW_REGIONS", "yes")
    with pytest.raises(ValueError, match="FULLCONV_CUDA_ROW_REGIONS"):
        fullconv.full_conv2d(x, w, b)


# Shapes whose channels come in whole 16-byte vectors, so every pass of float16/bfloat16 runs the
# channels-last kernels and with them the tiles FULLCONV_CUDA_TILES picks: up to 64 and more
# than 64 columns (128-column mma tiles), groups, stride, dilation, 1-D/3-D, 1x1; float32
# (TF32 off) runs its forward and grad_input on the gather kernels' FMA tiles.
# (nd, n, cin, cout, size, kernel, stride, dilation, groups)
MMA_LAYERS = [
    (2, 2, 64, 72, (9, 10), (3, 3), (2, 1), (1, 1), 1),
    (2, 2, 136, 144, (7, 6), (3, 3), (1, 1), (1, 1), 1),
    (2, 2, 80, 96, (8, 8), (3, 3), (1, 1), (2, 2), 2),
    (2, 3, 256, 128, (7, 7), (1, 1), (2, 2), (1, 1), 1),
    (3, 2, 64, 128, (4, 5, 6), (3, 3, 3), (1, 1, 1), (1, 1, 1), 1),
    (1, 2, 128, 256, (50,), (5,), (2,), (1,), 1),
]


# (tiles, dtype): the mma.sync tiles for float16/bfloat16 (mma-wide: 256-row tiles, 256 x 128
# on the layers of more than 64 columns; wgmma: Hopper's 128 x 128 wgmma tiles for the forward
# and grad_input of more than 64 columns on a compute-capability-9.0 device, the mma tiles
# elsewhere; wgmma-wide: 128 x 256 where a pass has more than 128 columns), the wide FMA
# tiles for float32 (auto: the per-problem choice, which picks each of them on some of these
# layers)
TILE_RUNS = [(t, d) for t in ("base", "mma", "mma-narrow", "mma-wide", "wgmma", "wgmma-wide", "auto")
             for d in (torch.float16, torch.bfloat16)] + [(t, torch.float32) for t in ("base", "simt-wide", "auto")]


TILE_CASES = [(cfg, memory_format, tiles, dtype) for cfg in MMA_LAYERS for memory_format in ("contiguous", "channels_last")
              for tiles, dtype in TILE_RUNS]


def tile_case_id(case):
    cfg, memory_format, tiles, dtype = case
    return "-".join(["x".join(map(str, (cfg[2], cfg[3], *cfg[4], *cfg[5], *cfg[6]))), memory_format, tiles,
                     str(dtype)[6:]])


@needs_gpu
@pytest.mark.parametrize("case", on_gpu(TILE_CASES), ids=tile_case_id)
def test_cuda_tiles_against_reference(case, monkeypatch):
    cfg, memory_format, tiles, dtype = case
    if dtype != torch.float32 and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("tensor-core tiles need compute capability 8.0")
    nd, n, cin, cout, size, kernel, stride, dilation, groups = cfg
    if memory_format == "channels_last" and nd == 1:
        pytest.skip("no channels-last memory format for 1-D tensors")
    monkeypatch.setenv("FULLCONV_CUDA_ALGORITHM", "igemm")
    monkeypatch.setenv("FULLCONV_CUDA_TILES", tiles)
    x = torch.randn(n, cin, *size, dtype=torch.float64, device="cuda")
    w = torch.randn(cout, cin // groups, *kernel, dtype=torch.float64, device="cuda") / (cin // groups * w_taps(kernel)) ** 0.5
    b = torch.randn(cout, dtype=torch.float64, device="cuda")
    leaves = [t.to(dtype) for t in (x, w, b)]
    if memory_format == "channels_last":
        leaves[0] = leaves[0].contiguous(memory_format=torch.channels_last if nd == 2 else torch.channels_last_3d)
    leaves = [t.requires_grad_() for t in leaves]
    fn = {1: fullconv.full_conv1d, 2: fullconv.full_conv2d, 3: fullconv.full_conv3d}[nd]
    y = fn(*leaves, stride, dilation, groups)
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, gy)
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    y_ref = full_conv_reference(*ref_leaves, stride, dilation, groups)
    ref_grads = torch.autograd.grad(y_ref, ref_leaves, gy.double())
    tol = LAYER_TOL[dtype]
    for name, a, r in zip(("output", "grad_input", "grad_weight", "grad_bias"), (y, *grads), (y_ref, *ref_grads)):
        assert a.isfinite().all(), f"{name}: non-finite values"
        scale = max(r.abs().max().item(), 1.0)
        err = (a.double() - r).abs().max().item() / scale
        assert err <= tol, f"{name}: relative error {err:.3g} > {tol}"


@needs_gpu
def test_cuda_tiles_switch_refuses_unknown_value(monkeypatch):
    monkeypatch.setenv("FULLCONV_CUDA_TILES", "tensor")
    x = torch.randn(1, 16, 5, 5, device="cuda", dtype=torch.float16)
    with pytest.raises(ValueError, match="FULLCONV_CUDA_TILES"):
        fullconv.full_conv2d(x, torch.randn(16, 16, 3, 3, device="cuda", dtype=torch.float16))


@needs_gpu
@pytest.mark.parametrize("tiles", ["wgmma", "wgmma-wide"])
def test_cuda_wgmma_tiles_run_where_hopper_code_is_built(tiles, monkeypatch):
    """FULLCONV_CUDA_TILES=wgmma / wgmma-wide: the float16 forward and grad_input of more than
    128 columns on the wgmma kernels of 128 / 256 columns on a compute-capability-9.0 device
    with a build holding sm_90a code, on the mma.sync kernels elsewhere (where the instructions
    would trap); gradients as the reference either way."""
    monkeypatch.setenv("FULLCONV_CUDA_ALGORITHM", "igemm")
    monkeypatch.setenv("FULLCONV_CUDA_TILES", tiles)
    x = torch.randn(2, 136, 9, 8, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    w = torch.randn(264, 136, 3, 3, device="cuda", dtype=torch.float16) / 35
    x.requires_grad_()
    w.requires_grad_()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        y = fullconv.full_conv2d(x, w)
        gy = torch.randn_like(y)
        gx, gw = torch.autograd.grad(y, (x, w), gy)
        torch.cuda.synchronize()
    calls = {e.key: e.count for e in prof.key_averages()}
    wgmma = sum(c for k, c in calls.items() if "WgmmaMath" in k)
    mma = sum(c for k, c in calls.items() if "MmaMath" in k)
    columns = {m for k in calls for m in re.findall(r"WgmmaMath<[^,<>]+, (\d+)", k)}
    if torch.cuda.get_device_capability() == (9, 0) and torch.ops.fullconv._cuda_wgmma_built():
        assert wgmma == 2, calls  # forward and grad_input (grad_weight: the mma.sync tiles)
        assert columns == {"256" if tiles == "wgmma-wide" else "128"}, calls
    else:
        assert wgmma == 0 and mma >= 3, calls
    xr, wr = (t.detach().double().requires_grad_() for t in (x, w))
    yr = full_conv_reference(xr, wr, None, (1, 1), (1, 1), 1)
    refs = (yr, *torch.autograd.grad(yr, (xr, wr), gy.double()))
    for name, a, r in zip(("output", "grad_input", "grad_weight"), (y, gx, gw), refs):
        err = (a.double() - r).abs().max().item() / max(r.abs().max().item(), 1.0)
        assert err <= LAYER_TOL[torch.float16], f"{name}: relative error {err:.3g}"


# One-tap kernels (no padding) under auto: both passes by ATen's convolution backward.
# (nd, n, cin, cout, size, stride, groups, memory_format)
ONE_TAP = [
    (2, 3, 64, 256, (14, 14), (1, 1), 1, "contiguous"),
    (2, 2, 256, 128, (9, 7), (2, 2), 1, "channels_last"),
    (1, 2, 12, 18, (11,), (3,), 3, "contiguous"),
    (3, 2, 8, 16, (3, 4, 5), (1, 2, 1), 2, "channels_last"),
    (2, 0, 8, 16, (5, 5), (1, 1), 1, "contiguous"),  # empty batch: fullconv's own kernels
]


NEEDS = [(True, True, True), (True, False, False), (False, True, False), (False, False, True)]
ONE_TAP_RUNS = [(cfg, dtype, batched, needs) for cfg in ONE_TAP
                for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16)
                for batched in (True, False) for needs in NEEDS]


def one_tap_id(run):
    cfg, dtype, batched, needs = run
    return "-".join(["x".join(map(str, (cfg[0], cfg[1], cfg[2], cfg[3], *cfg[5], cfg[6]))), str(dtype)[6:],
                     "batched" if batched else "unbatched", "".join("xwb"[i] for i in range(3) if needs[i])])


@needs_gpu
@pytest.mark.parametrize("run", on_gpu(ONE_TAP_RUNS), ids=one_tap_id)
def test_cuda_one_tap_backward(run, monkeypatch):
    cfg, dtype, batched, needs = run
    monkeypatch.delenv("FULLCONV_CUDA_ALGORITHM", raising=False)
    nd, n, cin, cout, size, stride, groups, memory_format = cfg
    if not batched:  # one sample, no batch dimension (and no channels-last format)
        n, memory_format = max(n, 1), "contiguous"
    x = torch.randn(n, cin, *size, dtype=torch.float64, device="cuda")
    w = torch.randn(cout, cin // groups, *([1] * nd), dtype=torch.float64, device="cuda") / (cin // groups) ** 0.5
    b = torch.randn(cout, dtype=torch.float64, device="cuda")
    if not batched:
        x = x[0]
    leaves = [t.to(dtype) for t in (x, w, b)]
    if memory_format == "channels_last":
        leaves[0] = leaves[0].contiguous(memory_format=torch.channels_last if nd == 2 else torch.channels_last_3d)
    leaves = [t.requires_grad_(need) for t, need in zip(leaves, needs)]
    fn = {1: fullconv.full_conv1d, 2: fullconv.full_conv2d, 3: fullconv.full_conv3d}[nd]
    y = fn(*leaves, stride, 1, groups)
    gy = torch.randn_like(y)
    wanted = [t for t in leaves if t.requires_grad]
    grads = torch.autograd.grad(y, wanted, gy)
    ref_leaves = [t.detach().double().requires_grad_(t.requires_grad) for t in leaves]
    y_ref = full_conv_reference(*ref_leaves, stride, 1, groups)
    ref_grads = torch.autograd.grad(y_ref, [t for t in ref_leaves if t.requires_grad], gy.double())
    tol = LAYER_TOL[dtype]
    for a, r, leaf in zip(grads, ref_grads, wanted):
        assert a.dtype == leaf.dtype and a.shape == leaf.shape
        if leaf is leaves[0] and memory_format == "channels_last":  # grad_input keeps the input's layout
            assert a.is_contiguous(memory_format=torch.channels_last if nd == 2 else torch.channels_last_3d)
        if r.numel() == 0:  # an empty batch: shapes and dtypes checked above, nothing to compare
            continue
        scale = max(r.abs().max().item(), 1.0)
        err = (a.double() - r).abs().max().item() / scale
        assert err <= tol, f"relative error {err:.3g} > {tol}"
    mask = [needs[0], needs[1], needs[2]]
    torch.library.opcheck(torch.ops.fullconv.full_conv_backward.default,
                          (gy, leaves[0].detach(), leaves[1].detach(), list(stride), [1] * nd, groups, mask))


@needs_gpu
def test_cuda_tf32_follows_the_convolution_precision_setting(monkeypatch):
    # Newer releases set TF32 per operation (torch.backends.cudnn.conv.fp32_precision); with the
    # convolution and RNN settings apart, asking without an operation would throw. fullconv
    # asks for convolutions and follows that setting.
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is None or not hasattr(conv, "fp32_precision"):
        pytest.skip("this torch has no per-operation float32 precision setting")
    if torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("TF32 needs compute capability 8.0")
    monkeypatch.setenv("FULLCONV_CUDA_ALGORITHM", "igemm")
    x = torch.randn(4, 64, 16, 16, device="cuda")
    w = torch.randn(64, 64, 3, 3, device="cuda") / 24
    old = conv.fp32_precision
    try:
        conv.fp32_precision = "ieee"
        strict = fullconv.full_conv2d(x, w)
        conv.fp32_precision = "tf32"
        fast = fullconv.full_conv2d(x, w)
    finally:
        conv.fp32_precision = old
    ref = full_conv_reference(x.double(), w.double())
    assert (strict.double() - ref).abs().max().item() < 1e-4
    assert not torch.equal(fast, strict), "TF32 allowed for convolutions but the float32 result is unchanged"
