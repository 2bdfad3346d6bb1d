"""gradcheck / gradgradcheck in float64 and torch.library.opcheck for both operators."""
import pytest
import torch

import fullconv

CONFIGS = [
    # nd, N, Cin, Cout, size, kernel, stride, dilation, groups, bias
    (1, 2, 2, 3, (5,), (3,), (1,), (1,), 1, True),
    (1, 1, 4, 4, (4,), (2,), (2,), (2,), 4, False),
    (2, 2, 2, 2, (4, 3), (3, 2), (1, 1), (1, 1), 1, True),
    (2, 1, 4, 2, (3, 4), (2, 3), (2, 1), (1, 2), 2, True),
    (2, 2, 3, 3, (3, 3), (3, 3), (3, 2), (2, 1), 3, False),
    (3, 1, 2, 2, (3, 2, 3), (2, 2, 1), (1, 2, 1), (1, 1, 2), 1, True),
    (3, 1, 2, 4, (2, 3, 2), (1, 2, 2), (2, 1, 1), (2, 1, 1), 2, False),
]


def make(cfg, unbatched=False, dtype=torch.float64, device="cpu"):
    nd, n, cin, cout, size, kernel, stride, dilation, groups, bias = cfg
    shape = ((cin,) if unbatched else (n, cin)) + size
    opts = dict(dtype=dtype, device=device, requires_grad=True)
    x = torch.randn(shape, **opts)
    w = torch.randn(cout, cin // groups, *kernel, **opts)
    b = torch.randn(cout, **opts) if bias else None
    return x, w, b, list(stride), list(dilation), groups


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c[0]}d-s{c[6]}-d{c[7]}-g{c[8]}")
def test_gradcheck_gradgradcheck(cfg, device):
    x, w, b, stride, dilation, groups = make(cfg, device=device)
    inputs = (x, w) if b is None else (x, w, b)

    def fn(*args):
        bias = args[2] if len(args) == 3 else None
        return torch.ops.fullconv.full_conv(args[0], args[1], bias, stride, dilation, groups)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("mask", [(True, True, True), (True, False, False), (False, True, False),
                                  (False, False, True), (False, True, True)])
def test_backward_op_gradcheck_and_mask(mask, any_device):
    x, w, _, stride, dilation, groups = make(CONFIGS[3], device=any_device)
    y = torch.ops.fullconv.full_conv(x, w, None, stride, dilation, groups)
    gy = torch.randn_like(y, requires_grad=True)
    outs = torch.ops.fullconv.full_conv_backward(gy, x, w, stride, dilation, groups, list(mask))
    for o, m, like in zip(outs, mask, (x, w, torch.empty(w.shape[0]))):
        assert o.device == x.device
        assert o.shape == (like.shape if m else (0,))

    def fn(gy_, x_, w_):
        outs = torch.ops.fullconv.full_conv_backward(gy_, x_, w_, stride, dilation, groups, list(mask))
        return tuple(o for o, m in zip(outs, mask) if m)

    assert torch.autograd.gradcheck(fn, (gy, x, w))


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c[0]}d-s{c[6]}-d{c[7]}-g{c[8]}")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_opcheck_full_conv(cfg, dtype, any_device):
    x, w, b, stride, dilation, groups = make(cfg, dtype=dtype, device=any_device)
    torch.library.opcheck(torch.ops.fullconv.full_conv.default, (x, w, b, stride, dilation, groups))


@pytest.mark.parametrize("cfg", CONFIGS[:4], ids=lambda c: f"{c[0]}d-s{c[6]}-g{c[8]}")
def test_opcheck_unbatched_and_channels_last(cfg, any_device):
    x, w, b, stride, dilation, groups = make(cfg, unbatched=True, device=any_device)
    torch.library.opcheck(torch.ops.fullconv.full_conv.default, (x, w, b, stride, dilation, groups))
    if cfg[0] == 2:
        x, w, b, stride, dilation, groups = make(cfg, device=any_device)
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
        torch.library.opcheck(torch.ops.fullconv.full_conv.default, (x, w, b, stride, dilation, groups))


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c[0]}d-s{c[6]}-d{c[7]}-g{c[8]}")
def test_opcheck_backward(cfg, any_device):
    x, w, b, stride, dilation, groups = make(cfg, device=any_device)
    y = torch.ops.fullconv.full_conv(x, w, b, stride, dilation, groups)
    gy = torch.randn_like(y).requires_grad_()
    for mask in ([True, True, b is not None], [False, True, False], [True, False, False]):
        torch.library.opcheck(torch.ops.fullconv.full_conv_backward.default,
                              (gy, x, w, stride, dilation, groups, mask))


def test_empty_batch_gradients(device):
    x = torch.randn(0, 4, 5, 5, device=device, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, device=device, requires_grad=True)
    b = torch.randn(6, device=device, requires_grad=True)
    y = fullconv.full_conv2d(x, w, b, groups=2)
    assert y.shape == (0, 6, 7, 7)
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w))
    assert torch.equal(b.grad, torch.zeros_like(b))
