"""torch.func: vmap through the operators' batching rules (no per-sample fallback), and
grad / vjp / jvp / jacrev / jacfwd / hessian / per-sample gradients through the functional
API, the modules and the residual ops, each against the same transform of the reference."""
import itertools

import pytest
import torch
from torch import func

import fullconv
from fullconv.reference import full_conv_reference
from helpers import assert_close_scaled, functional

D = torch.float64


def _close(a, b, what):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            _close(a[k], b[k], f"{what}[{k}]")
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), what
        for i, (u, v) in enumerate(zip(a, b)):
            _close(u, v, f"{what}[{i}]")
    else:
        assert_close_scaled(a, b, D, what)


def _problem(nd, unbatched, groups, device):
    size, kernel = (5, 6, 4)[:nd], (3, 2, 2)[:nd]
    stride, dilation = (2, 1, 1)[:nd], (1, 2, 1)[:nd]
    x = torch.randn(((4,) if unbatched else (2, 4)) + size, dtype=D, device=device)
    w = torch.randn((6, 4 // groups) + kernel, dtype=D, device=device)
    b = torch.randn(6, dtype=D, device=device)
    return x, w, b, stride, dilation


def _assert_no_fallback(capfd):
    # PyTorch's per-sample fallback announces itself on the C++ stderr (not through Python's
    # warnings), once per call
    err = capfd.readouterr().err
    assert "performance drop" not in err, err


def test_fallback_detector_sees_the_fallback(capfd):
    """The detector above is live: the raw padded_add operator has no batching rule (its public
    function takes the composite path under transforms), so vmap over it falls back."""
    capfd.readouterr()
    func.vmap(lambda a, r: torch.ops.fullconv.padded_add(a, r, [1, 1], False))(torch.randn(3, 2, 4, 5),
                                                                            torch.randn(3, 2, 2, 3))
    assert "performance drop" in capfd.readouterr().err


def test_vmap_over_zero_samples(any_device):
    x = torch.randn(0, 2, 4, 6, 5, dtype=D, device=any_device)
    w = torch.randn(6, 4, 3, 3, dtype=D, device=any_device)
    assert func.vmap(lambda xi: fullconv.full_conv2d(xi, w))(x).shape == (0, 2, 6, 8, 7)
    ws = torch.randn(0, *w.shape, dtype=D, device=any_device)
    gx, gw = func.vmap(func.grad(lambda xi, wi: fullconv.full_conv2d(xi, wi).sum(), argnums=(0, 1)))(x, ws)
    assert gx.shape == x.shape and gw.shape == ws.shape


def test_autocast_under_transforms():
    """CPU autocast inside torch.func: the same dtypes and values as F.conv2d's."""
    import torch.nn.functional as F
    x, w, b = torch.randn(2, 4, 6, 5), torch.randn(6, 2, 3, 3), torch.randn(6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = func.grad(lambda w: fullconv.full_conv2d(x, w, b, 1, 1, 2).float().square().sum())(w)
        want = func.grad(lambda w: F.conv2d(x, w, b, 1, 2, 1, 2).float().square().sum())(w)
        primal, tangent = func.jvp(lambda w: fullconv.full_conv2d(x, w, b, 1, 1, 2), (w,), (torch.ones_like(w),))
    assert got.dtype == want.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=3e-2, atol=3e-2 * want.abs().max().item())
    assert primal.dtype == tangent.dtype == torch.bfloat16


def test_functionalize_runs_the_operators():
    x, w = torch.randn(2, 4, 6, 5), torch.randn(6, 2, 3, 3)
    got = func.functionalize(lambda x: fullconv.full_conv2d(x, w, None, 1, 1, 2))(x)
    torch.testing.assert_close(got, fullconv.full_conv2d(x, w, None, 1, 1, 2))


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("vmapped", [c for c in itertools.product((0, None), repeat=3) if c != (None,) * 3],
                         ids=lambda c: "xwb-" + "".join("v" if d is not None else "-" for d in c))
def test_vmap_forward_and_per_sample_gradients(nd, unbatched, vmapped, any_device, capfd):
    """vmap over any subset of (input, weight, bias), forward and per-sample gradients
    (vmap of grad), against a loop over the samples; and no per-sample fallback warning."""
    groups, B = 2, 3
    x, w, b, stride, dilation = _problem(nd, unbatched, groups, any_device)
    xs, ws, bs = [t.unsqueeze(0).repeat(B, *([1] * t.dim())) + torch.randn(B, *t.shape, dtype=D, device=any_device)
                  if d is not None else t for t, d in zip((x, w, b), vmapped)]
    fn = functional(nd)

    def loss(x, w, b):
        return fn(x, w, b, stride, dilation, groups).tanh().sum()

    y = func.vmap(lambda x, w, b: fn(x, w, b, stride, dilation, groups), in_dims=vmapped)(xs, ws, bs)
    grads = func.vmap(func.grad(loss, argnums=(0, 1, 2)), in_dims=vmapped)(xs, ws, bs)
    _assert_no_fallback(capfd)
    for i in range(B):
        xi, wi, bi = [(t[i] if d is not None else t).detach().requires_grad_() for t, d in zip((xs, ws, bs), vmapped)]
        yi = full_conv_reference(xi, wi, bi, stride, dilation, groups)
        assert_close_scaled(y[i], yi, D, f"vmapped forward, sample {i}")
        want = torch.autograd.grad(yi.tanh().sum(), (xi, wi, bi))
        for name, g, r in zip(("input", "weight", "bias"), grads, want):
            assert_close_scaled(g[i], r, D, f"per-sample grad_{name}, sample {i}")


def test_vmap_over_the_backward_operator(any_device, capfd):
    """full_conv_backward's batching rule directly, every output mask, every operand batched or not."""
    x, w, _, stride, dilation = _problem(2, False, 2, any_device)
    gy0 = torch.randn(full_conv_reference(x, w, None, stride, dilation, 2).shape, dtype=D, device=any_device)
    op = torch.ops.fullconv.full_conv_backward
    B = 2
    batched = [torch.randn(B, *t.shape, dtype=D, device=any_device) for t in (gy0, x, w)]
    for dims in itertools.product((0, None), repeat=3):
        if dims == (None, None, None):
            continue
        args = [bt if d is not None else t for bt, t, d in zip(batched, (gy0, x, w), dims)]
        for mask in itertools.product((False, True), repeat=3):
            if not any(mask):
                continue
            got = func.vmap(lambda gy, x, w: op(gy, x, w, list(stride), list(dilation), 2, list(mask)),
                            in_dims=dims)(*args)
            _assert_no_fallback(capfd)
            for i in range(B):
                gy_i, x_i, w_i = [(a[i] if d is not None else a) for a, d in zip(args, dims)]
                want = op(gy_i, x_i, w_i, list(stride), list(dilation), 2, list(mask))
                for m, g, r in zip(mask, got, want):
                    if m:
                        assert_close_scaled(g[i], r, D, f"dims {dims} mask {mask} sample {i}")


@pytest.mark.parametrize("nd", [1, 2])
def test_transforms_match_the_reference(nd, any_device):
    x, w, b, stride, dilation = _problem(nd, False, 2, any_device)
    fn = functional(nd)

    def ours(x, w, b):
        return fn(x, w, b, stride, dilation, 2).tanh()

    def ref(x, w, b):
        return full_conv_reference(x, w, b, stride, dilation, 2).tanh()

    argnums = (0, 1, 2)
    _close(func.grad(lambda *a: ours(*a).sum(), argnums)(x, w, b),
           func.grad(lambda *a: ref(*a).sum(), argnums)(x, w, b), "grad")
    _close(func.jacrev(ours, argnums)(x, w, b), func.jacrev(ref, argnums)(x, w, b), "jacrev")
    _close(func.jacfwd(ours, argnums)(x, w, b), func.jacfwd(ref, argnums)(x, w, b), "jacfwd")
    tangents = tuple(torch.randn_like(t) for t in (x, w, b))
    _close(func.jvp(ours, (x, w, b), tangents), func.jvp(ref, (x, w, b), tangents), "jvp")
    cot = torch.randn_like(ref(x, w, b))
    _close(func.vjp(ours, x, w, b)[1](cot), func.vjp(ref, x, w, b)[1](cot), "vjp")
    # second order: hessian (jacfwd over jacrev) and jacrev over jacrev, on a small problem
    xs, ws, bs = x[:1, ..., :3], w[:4, ..., :2], b[:4]
    _close(func.hessian(lambda *a: ours(*a).sum(), (0, 1))(xs, ws, bs),
           func.hessian(lambda *a: ref(*a).sum(), (0, 1))(xs, ws, bs), "hessian")
    _close(func.jacrev(func.jacrev(lambda *a: ours(*a).sum(), 1), 1)(xs, ws, bs),
           func.hessian(lambda *a: ref(*a).sum(), 1)(xs, ws, bs), "jacrev of jacrev")


def test_per_sample_gradients_of_a_residual_network(any_device):
    """functional_call + vmap(grad) over a small network with FullConv2d modules, the fused
    residual op and padded_add: per-sample gradients as a loop of ordinary backward passes."""
    conv1 = fullconv.FullConv2d(3, 4, 3, dtype=D, device=any_device)
    conv2 = fullconv.FullConv2d(4, 4, 3, stride=2, groups=2, dtype=D, device=any_device)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = conv1, conv2

        def forward(self, x):
            h = self.conv1(x)
            r = fullconv.full_conv_residual(h, self.conv2.weight, self.conv2.bias, x[:, :1, 1:5, 1:4].expand(-1, 4, -1, -1),
                                            stride=2, groups=2, relu=True)
            return fullconv.padded_add(r, h[..., 2:6, 2:5], relu=False)

    net = Net()
    params = {k: v.detach() for k, v in net.named_parameters()}
    X = torch.randn(4, 3, 7, 6, dtype=D, device=any_device)

    def loss(p, xi):
        return func.functional_call(net, p, (xi.unsqueeze(0),)).square().sum()

    got = func.vmap(func.grad(loss), in_dims=(None, 0))(params, X)
    for i in range(X.shape[0]):
        net.zero_grad()
        net(X[i:i + 1]).square().sum().backward()
        for k, p in net.named_parameters():
            assert_close_scaled(got[k][i], p.grad, D, f"per-sample grad of {k}, sample {i}")


def test_raw_operators_refuse_grad_and_jvp_instead_of_a_wrong_tangent():
    """The raw operators' autograd formulas are C++ and not transform-aware: grad, jvp and a
    forward-mode dual raise (a Python formula used to give jvp a zero tangent silently); the
    functional API differentiates under every transform (tests above)."""
    import torch.autograd.forward_ad as fwAD
    x, w = torch.randn(1, 2, 5, 5, dtype=D), torch.randn(3, 2, 3, 3, dtype=D)
    for name in ("full_conv", "full_conv_residual"):
        if name == "full_conv":
            def f(w):
                return torch.ops.fullconv.full_conv(x, w, None, [1, 1], [1, 1], 1)
        else:
            def f(w):
                return torch.ops.fullconv.full_conv_residual(x, w, None, torch.zeros(1, 3, 7, 7, dtype=D),
                                                             [1, 1], [1, 1], 1, [0, 0], False)
        with pytest.raises(RuntimeError, match="functorch"):
            func.grad(lambda w: f(w).sum())(w)
        with pytest.raises(RuntimeError, match="functorch"):
            func.jvp(f, (w,), (torch.ones_like(w),))
        with fwAD.dual_level(), pytest.raises(RuntimeError, match="jvp is not implemented"):
            f(fwAD.make_dual(w, torch.ones_like(w)))
    assert func.vmap(lambda w: torch.ops.fullconv.full_conv(x, w, None, [1, 1], [1, 1], 1))(w[None]).shape == (1, 1, 3, 7, 7)
