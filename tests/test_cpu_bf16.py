"""The CPU's bfloat16 tiles (AVX512_BF16: pairs of input channels per vdpbf16ps, float32 sums)
against the float64 reference, beside the float32 tiles they replace
(FULLCONV_CPU_BF16_TILES=off), forward and gradients."""
import pytest
import torch

import fullconv
from helpers import assert_close_scaled, check_against_reference


def cpu_has_bf16_tiles() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx512_bf16" in flags and " avx512f" in flags


CASES = [
    # nd, N, Cin, Cout, size, kernel, stride, dilation, groups, channels_last
    (2, 2, 16, 32, (9, 7), (3, 3), (1, 1), (1, 1), 1, False),
    (2, 2, 32, 64, (6, 8), (3, 2), (1, 1), (1, 1), 1, True),
    (2, 1, 20, 70, (5, 5), (3, 3), (2, 1), (1, 2), 1, False),   # strided, dilated, 70 = 64 + tail
    (2, 2, 24, 48, (7, 6), (3, 3), (1, 1), (2, 1), 2, True),    # groups of 12 -> 24
    (2, 1, 8, 16, (4, 4), (5, 5), (3, 3), (1, 1), 1, False),    # stride > kernel reach in gin
    (1, 2, 18, 40, (17,), (5,), (1,), (2,), 1, False),
    (1, 2, 32, 32, (12,), (3,), (2,), (1,), 1, False),
    (3, 1, 16, 16, (4, 3, 5), (3, 2, 3), (1, 1, 2), (1, 2, 1), 1, False),
    (2, 2, 10, 20, (6, 6), (3, 3), (1, 1), (1, 1), 1, False),   # 10 channels: even, below a vector
    (2, 2, 9, 20, (6, 6), (3, 3), (1, 1), (1, 1), 1, False),    # odd: the float32 tiles
    (2, 2, 16, 32, (9, 7), (1, 1), (1, 1), (1, 1), 1, True),    # one tap: ATen's where it has AVX512_BF16
    (3, 1, 16, 24, (4, 3, 5), (1, 1, 1), (2, 1, 1), (1, 1, 1), 2, False),
    (1, 2, 12, 20, (17,), (1,), (2,), (1,), 1, False),
]


@pytest.mark.parametrize("mode", ["auto", "off"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}d-c{c[2]}-{c[3]}-s{c[6]}-d{c[7]}-g{c[8]}")
def test_bf16_against_float64_reference(case, mode, monkeypatch):
    monkeypatch.setenv("FULLCONV_CPU_BF16_TILES", mode)
    nd, n, cin, cout, size, kernel, stride, dilation, groups, cl = case
    torch.manual_seed(cin * 7 + cout)
    x = torch.randn(n, cin, *size).bfloat16()
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    w = (torch.randn(cout, cin // groups, *kernel) / (cin // groups * torch.tensor(kernel).prod()) ** 0.5).bfloat16()
    b = torch.randn(cout).bfloat16()
    check_against_reference(x, w, b, list(stride), list(dilation), groups)


def test_bf16_tiles_run_where_the_cpu_has_them(monkeypatch):
    # a long reduction (576 products per output, 166k outputs): the pairwise sums round differently from the
    # float32 tiles' one-product-at-a-time sums, so the two paths give different bits, and
    # both stay within bfloat16's tolerance of the float64 reference
    torch.manual_seed(0)
    x = torch.randn(8, 64, 16, 16).bfloat16()
    w = (torch.randn(64, 64, 3, 3) / 24).bfloat16()
    ref = fullconv.full_conv2d(x.double(), w.double())
    outs = {}
    for mode in ("auto", "off"):
        monkeypatch.setenv("FULLCONV_CPU_BF16_TILES", mode)
        outs[mode] = fullconv.full_conv2d(x, w).float()
        # (float32 sums of the same products: before the final rounding to bfloat16)
        assert_close_scaled(outs[mode], ref, torch.bfloat16, mode)
    monkeypatch.setenv("FULLCONV_CPU_BF16_TILES", "off")
    if cpu_has_bf16_tiles():
        assert not torch.equal(outs["auto"], outs["off"]), "the bfloat16 tiles did not run"
    else:
        assert torch.equal(outs["auto"], outs["off"])


def test_bf16_one_tap_on_aten_where_the_cpu_has_bf16(monkeypatch):
    # one-tap layers (ordinary convolutions) run on ATen's oneDNN kernels where the CPU has
    # AVX512_BF16 (elsewhere ATen's bfloat16 convolution is not oneDNN's: the tiles), forward
    # and both gradients; FULLCONV_CPU_ALGORITHM=blocked keeps them on the tiles
    torch.manual_seed(1)
    x = torch.randn(4, 32, 10, 10).bfloat16().requires_grad_()
    w = (torch.randn(48, 32, 1, 1) / 6).bfloat16().requires_grad_()
    for algorithm in ("auto", "blocked"):
        monkeypatch.setenv("FULLCONV_CPU_ALGORITHM", algorithm)
        before = torch.ops.fullconv._cpu_kernel_calls("bf16_tiles") + torch.ops.fullconv._cpu_kernel_calls("tiles")
        y = fullconv.full_conv2d(x, w)
        gx, gw = torch.autograd.grad(y, (x, w), torch.ones_like(y))
        calls = torch.ops.fullconv._cpu_kernel_calls("bf16_tiles") + torch.ops.fullconv._cpu_kernel_calls("tiles") - before
        on_aten = algorithm == "auto" and cpu_has_bf16_tiles()
        assert (calls == 0) == on_aten, (algorithm, calls)
        xr, wr = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
        yr = torch.nn.functional.conv2d(xr, wr)
        gxr, gwr = torch.autograd.grad(yr, (xr, wr), torch.ones_like(yr))
        for got, want, name in ((y, yr, "forward"), (gx, gxr, "grad_input"), (gw, gwr, "grad_weight")):
            assert got.dtype == torch.bfloat16
            assert_close_scaled(got, want, torch.bfloat16, f"{algorithm} {name}")


def test_bf16_tiles_setting_is_checked(monkeypatch):
    monkeypatch.setenv("FULLCONV_CPU_BF16_TILES", "fast")
    x = torch.randn(1, 16, 5, 5).bfloat16()
    w = torch.randn(32, 16, 3, 3).bfloat16()
    with pytest.raises(ValueError, match="FULLCONV_CPU_BF16_TILES"):
        fullconv.full_conv2d(x, w)


def test_bf16_autocast_module_matches_float64(monkeypatch):
    torch.manual_seed(1)
    m = fullconv.FullConv2d(32, 64, 3, stride=2)
    x = torch.randn(2, 32, 11, 11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert y.dtype == torch.bfloat16
    ref = fullconv.full_conv2d(x.bfloat16().double(), m.weight.bfloat16().double(), m.bias.bfloat16().double(), 2)
    assert_close_scaled(y, ref, torch.bfloat16, "autocast")
