"""gradcheck / gradgradcheck in float64 and torch.library.opcheck for both operators."""
import pytest
import torch
import torch.nn.functional as F

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


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_zero_input_channels_gradients(nd, dtype, device):
    # a reduction over no input channel: every output is the bias (zero without one); the
    # gradients are empty for the input, zero for the weight, grad_output's sum for the bias
    for groups, bias in ((1, True), (2, True), (1, False)):
        x = torch.randn(2, 0, *(5,) * nd, device=device, dtype=dtype, requires_grad=True)
        w = torch.randn(4, 0, *(3,) * nd, device=device, dtype=dtype, requires_grad=True)
        b = torch.randn(4, device=device, dtype=dtype, requires_grad=True) if bias else None
        full = {1: fullconv.full_conv1d, 2: fullconv.full_conv2d, 3: fullconv.full_conv3d}[nd]
        y = full(x, w, b, 2, 1, groups)
        assert y.shape == (2, 4, *(4,) * nd)
        expect = b.detach().view(1, 4, *(1,) * nd).expand_as(y) if bias else torch.zeros_like(y)
        assert torch.equal(y.detach(), expect)
        gy = torch.randn_like(y)
        y.backward(gy)
        assert x.grad.shape == x.shape
        assert w.grad.shape == w.shape
        if bias:
            torch.testing.assert_close(b.grad, gy.sum(dim=[0, *range(2, 2 + nd)]))
        for mask in ([True, True, False], [True, False, False], [False, True, False]):
            gx, gw, _ = torch.ops.fullconv.full_conv_backward(gy, x.detach(), w.detach(), [2] * nd, [1] * nd,
                                                             groups, mask)
            assert gx.shape == (x.shape if mask[0] else (0,))
            assert gw.shape == (w.shape if mask[1] else (0,))


# --- forward-mode AD, autocast with mixed dtypes, non-finite grad_output ---------------------

@pytest.mark.parametrize("nd", [1, 2, 3])
def test_forward_mode_ad_matches_conv(nd):
    import torch.autograd.forward_ad as fwAD
    torch.manual_seed(nd)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    full = {1: fullconv.full_conv1d, 2: fullconv.full_conv2d, 3: fullconv.full_conv3d}[nd]
    x = torch.randn(2, 4, *(5,) * nd, dtype=torch.float64)
    w = torch.randn(6, 2, *(3,) * nd, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    tx, tw, tb = torch.randn_like(x), torch.randn_like(w), torch.randn_like(b)
    for which in ([0], [1], [2], [0, 1, 2]):
        args = [(x, tx), (w, tw), (b, tb)]
        with fwAD.dual_level():
            duals = [fwAD.make_dual(p, t) if i in which else p for i, (p, t) in enumerate(args)]
            got = fwAD.unpack_dual(full(*duals, 2, 1, 2))
            ref = fwAD.unpack_dual(conv(*duals, 2, 2, 1, 2))
        torch.testing.assert_close(got.primal, ref.primal)
        torch.testing.assert_close(got.tangent, ref.tangent)
    _, jt = torch.func.jvp(lambda w: full(x, w, b, 1, 2, 2), (w,), (tw,))
    _, jr = torch.func.jvp(lambda w: conv(x, w, b, 1, [2 * 2] * nd, 2, 2), (w,), (tw,))
    torch.testing.assert_close(jt, jr)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c[0]}d-s{c[6]}-d{c[7]}-g{c[8]}")
def test_forward_over_reverse_matches_conv(cfg):
    """A tangent carried through a reverse-mode gradient taken under the dual level (a
    Hessian-vector product; gradgradcheck's check_fwd_over_rev): the backward's own operator
    must carry tangents too."""
    import torch.autograd.forward_ad as fwAD
    torch.manual_seed(0)
    x, w, b, stride, dilation, groups = make(cfg)
    b = b if b is not None else torch.randn(w.shape[0], dtype=w.dtype, requires_grad=True)
    nd = cfg[0]
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    pad = [d * (k - 1) for d, k in zip(dilation, w.shape[2:])]
    tangents = [torch.randn_like(t) for t in (x, w, b)]
    results = []
    full = {1: fullconv.full_conv1d, 2: fullconv.full_conv2d, 3: fullconv.full_conv3d}[nd]
    for fn in (lambda x, w, b: full(x, w, b, stride, dilation, groups),
               lambda x, w, b: conv(x, w, b, stride, pad, dilation, groups)):
        with fwAD.dual_level():
            duals = [fwAD.make_dual(p.detach().requires_grad_(), t) for p, t in zip((x, w, b), tangents)]
            y = fn(*duals)
            grads = torch.autograd.grad((y * y).sum(), duals, create_graph=True)
            results.append([fwAD.unpack_dual(g) for g in grads])
    for got, ref in zip(*results):
        torch.testing.assert_close(got.primal, ref.primal)
        torch.testing.assert_close(got.tangent, ref.tangent)
    assert torch.autograd.gradgradcheck(lambda x, w, b: full(x, w, b, stride, dilation, groups),
                                        (x, w, b), check_fwd_over_rev=True)


@pytest.mark.parametrize("autocast", [False, True])
def test_forward_over_reverse_through_a_layer_without_tangents(autocast):
    """Two layers under one dual level, the tangent on the second's weight only: the first
    layer's backward then meets a dual grad_output. Under autocast the bfloat16 activation meets
    the second layer's float32 weight, as in nn.Conv2d."""
    import contextlib
    import torch.autograd.forward_ad as fwAD
    torch.manual_seed(0)
    x, w1, w2 = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3), torch.randn(5, 4, 3, 3)
    tw = torch.randn_like(w2)
    results = []
    for conv in (fullconv.full_conv2d, lambda a, w: F.conv2d(a, w, padding=2)):
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with ctx, fwAD.dual_level():
            xx = x.clone().requires_grad_()
            y = conv(conv(xx, w1), fwAD.make_dual(w2.clone().requires_grad_(), tw))
            g, = torch.autograd.grad(y.float().pow(2).sum(), xx, create_graph=True)
            results.append((fwAD.unpack_dual(y), fwAD.unpack_dual(g)))
    (y, g), (y_ref, g_ref) = results
    assert y.tangent.dtype == y_ref.tangent.dtype and g.tangent.dtype == g_ref.tangent.dtype
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=1e-4, atol=1e-3)  # float32 sums in other orders
    for got, ref in ((y.tangent, y_ref.tangent), (g.primal, g_ref.primal), (g.tangent, g_ref.tangent)):
        torch.testing.assert_close(got.float(), ref.float(), **tol)


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_forward_over_reverse_when_forward_ran_before_the_dual_level(create_graph, fused):
    """A model run outside the dual level, its gradient taken inside one with a dual
    grad_output: the operators' C++ formulas then meet tangents in their backward, which must
    carry them (as F.conv2d's does), not drop them."""
    import torch.autograd.forward_ad as fwAD
    torch.manual_seed(0)
    opts = dict(dtype=torch.float64, requires_grad=True)
    x, w, b = torch.randn(2, 2, 5, 5, **opts), torch.randn(3, 2, 3, 3, **opts), torch.randn(3, **opts)
    r = torch.randn(2, 3, 3, 3, **opts)
    if fused:
        got_fn = lambda: fullconv.full_conv_residual(x, w, b, r, relu=True)  # noqa: E731
        ref_fn = lambda: torch.relu(F.conv2d(x, w, b, padding=2) + F.pad(r, (2, 2, 2, 2)))  # noqa: E731
        inputs = (x, w, b, r)
    else:
        got_fn = lambda: fullconv.full_conv2d(x, w, b)  # noqa: E731
        ref_fn = lambda: F.conv2d(x, w, b, padding=2)  # noqa: E731
        inputs = (x, w, b)
    g = t = None
    results = []
    for fn in (got_fn, ref_fn):
        y = fn()
        if g is None:
            g, t = torch.randn_like(y), torch.randn_like(y)
        with fwAD.dual_level():
            grads = torch.autograd.grad(y, inputs, fwAD.make_dual(g, t), create_graph=create_graph)
            results.append([fwAD.unpack_dual(v) for v in grads])
    for got, ref in zip(*results):
        assert got.tangent is not None and ref.tangent is not None
        torch.testing.assert_close(got.primal, ref.primal)
        torch.testing.assert_close(got.tangent, ref.tangent)


def test_forward_over_reverse_through_fused_epilogue():
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    r = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, w, r: fullconv.full_conv_residual(x, w, None, r, relu=True),
                                        (x, w, r), check_fwd_over_rev=True)
    assert torch.autograd.gradgradcheck(lambda x, r: fullconv.padded_add(x, r, relu=False),
                                        (torch.randn(2, 2, 6, 6, dtype=torch.float64, requires_grad=True), r),
                                        check_fwd_over_rev=True)


def test_forward_mode_ad_through_fused_epilogue():
    import torch.autograd.forward_ad as fwAD
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    w = torch.randn(4, 4, 3, 3, dtype=torch.float64)
    r = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    tw, tr = torch.randn_like(w), torch.randn_like(r)
    with fwAD.dual_level():
        wd, rd = fwAD.make_dual(w, tw), fwAD.make_dual(r, tr)
        got = fwAD.unpack_dual(fullconv.full_conv_residual(x, wd, None, rd, relu=True)).tangent
        ref = fwAD.unpack_dual(torch.relu(F.conv2d(x, wd, padding=2) + F.pad(rd, (2, 2, 2, 2)))).tangent
        got2 = fwAD.unpack_dual(fullconv.padded_add(F.conv2d(x, wd, padding=2), rd, relu=True)).tangent
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(got2, ref)


def test_autocast_takes_mixed_dtypes_like_nn_conv():
    # under autocast a bfloat16 activation meets a float32 weight (every layer after the
    # first): the functional API and the modules run it, as nn.Conv2d does
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8).bfloat16()
    m = fullconv.FullConv2d(3, 4, 3)
    ref_m = torch.nn.Conv2d(3, 4, 3, padding=2)
    ref_m.load_state_dict(m.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
        ref = ref_m(x)
        y2 = fullconv.full_conv2d(x, m.weight, m.bias)
    assert y.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(y2, ref)
    with pytest.raises(fullconv.FullConvTypeError, match="same dtype"):  # outside autocast: refused
        fullconv.full_conv2d(x, m.weight)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_nonfinite_grad_output_gives_reference_grad_weight(bad):
    # A padded convolution's grad_weight multiplies grad_output by the padding zeros too:
    # 0 * inf = NaN at every tap that meets padding at the poisoned element.
    torch.manual_seed(1)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    y = fullconv.full_conv2d(x, w, None, (2, 1), (1, 2))
    gy = torch.randn_like(y)
    gy[1, 2, 0, 3] = bad
    got = torch.autograd.grad(y, (x, w), gy)
    yr = F.conv2d(x, w, None, (2, 1), (2, 2), (1, 2))
    ref = torch.autograd.grad(yr, (x, w), gy)
    # the CPU backward operator itself gives them (eager autograd, compiled graphs, direct calls)
    direct = torch.ops.fullconv.full_conv_backward(gy, x.detach(), w.detach(), [2, 1], [1, 2], 1, [True, True, False])
    torch._dynamo.reset()
    f = torch.compile(lambda x, w: fullconv.full_conv2d(x, w, None, (2, 1), (1, 2)), backend="aot_eager", fullgraph=True)
    compiled = torch.autograd.grad(f(x, w), (x, w), gy)
    for got_ in (got, direct[:2], compiled):
        for a, r in zip(got_, ref):
            assert torch.equal(a.isnan(), r.isnan())
            torch.testing.assert_close(a.nan_to_num(0.0, 1e300, -1e300), r.nan_to_num(0.0, 1e300, -1e300))
    assert got[1].isnan().any()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last_input", "channels_last_weight",
                                    "unbatched_cl_weight", "sliced"])
@pytest.mark.parametrize("algorithm", ["auto", "blocked"])
def test_one_by_one_forward_layouts(layout, algorithm, monkeypatch):
    # 1x1 kernels (no padding) run ATen's convolution under auto: same values and the same
    # output layout as fullconv's own kernels and its fake kernel
    monkeypatch.setenv("FULLCONV_CPU_ALGORITHM", algorithm)
    torch.manual_seed(0)
    x = torch.randn(3, 16, 7, 9)
    w = torch.randn(24, 8, 1, 1)
    b = torch.randn(24)
    if layout == "channels_last_input":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "channels_last_weight":
        w = w.contiguous(memory_format=torch.channels_last)
    elif layout == "unbatched_cl_weight":
        x, w = x[0], w.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        x = torch.randn(3, 32, 7, 18)[:, ::2, :, ::2]
    y = fullconv.full_conv2d(x, w, b, (2, 1), 1, 2)
    ref = F.conv2d(x.double(), w.double(), b.double(), (2, 1), 0, 1, 2)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = torch.ops.fullconv.full_conv(mode.from_tensor(x), mode.from_tensor(w), mode.from_tensor(b),
                                            [2, 1], [1, 1], 2)
    assert fake.stride() == y.stride()
    torch.library.opcheck(torch.ops.fullconv.full_conv.default, (x, w, b, [2, 1], [1, 1], 2))


def test_nonfinite_grad_output_seen_only_by_padding():
    # dilation 4 on a length-3 input: some outputs read nothing but padding, so an inf there
    # leaves fullconv's grad_weight finite, and only the check of grad_output itself finds it
    x = torch.randn(1, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    y = fullconv.full_conv1d(x, w, None, 1, 4)
    yr = F.conv1d(x, w, None, 1, 8, 4)
    gy = torch.randn_like(y)
    gy[0, 1, 3] = float("inf")  # output 3 reads inputs -5, -1, 3: all padding
    ref = torch.autograd.grad(yr, w, gy)[0]
    got = torch.autograd.grad(y, w, gy)[0]
    assert ref.isnan().any()
    assert torch.equal(got.isnan(), ref.isnan())
    torch.testing.assert_close(got.nan_to_num(0.0), ref.nan_to_num(0.0))


def test_finite_grad_weight_whose_sum_overflows_stays_exact():
    # the fix-up's quick test sums grad_weight; finite values that overflow the sum take the
    # exact path, which must leave them as they are
    x = torch.full((1, 1, 4), 1e18, requires_grad=True)
    w = torch.ones(16, 1, 2, requires_grad=True)  # 32 entries of 4e37: their sum overflows
    y = fullconv.full_conv1d(x, w)
    gy = torch.full_like(y, 1e19)
    got = torch.autograd.grad(y, w, gy)[0]
    assert torch.isfinite(got).all() and float(got.sum()) == float("inf")
    torch.testing.assert_close(got, torch.autograd.grad(F.conv1d(x, w, None, 1, 1), w, gy)[0])
