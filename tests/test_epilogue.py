"""Fused residual epilogue ops: full_conv_residual and padded_add vs the unfused path."""
import pytest
import torch
import torch.nn.functional as F

import fullconv
from fullconv.reference import full_conv_reference
from helpers import assert_close_scaled


def centred_pad(r, out):
    nd = out.dim() - 2
    spec = []
    for o, s in reversed(list(zip(out.shape[-nd:], r.shape[-nd:]))):
        spec += [(o - s) // 2] * 2
    return F.pad(r, spec)


CASES = [  # nd, x shape, w shape, stride, dilation, groups, residual shrink per dim
    (1, (2, 4, 9), (6, 2, 3), 1, 1, 2, 2),
    (2, (2, 3, 7, 6), (5, 3, 3, 3), 1, 1, 1, 2),
    (2, (2, 4, 9, 8), (4, 1, 3, 3), 2, 1, 4, 0),
    (2, (1, 2, 5, 5), (3, 2, 3, 3), 1, 2, 1, 4),
    (3, (1, 2, 4, 5, 3), (2, 2, 3, 1, 3), 1, 1, 1, 2),
]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}d-s{c[3]}-d{c[4]}-g{c[5]}")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_full_conv_residual_matches_unfused(case, relu, dtype, device):
    nd, xs, ws, stride, dilation, groups, shrink = case
    x = torch.randn(xs, dtype=torch.float64)
    w = torch.randn(ws, dtype=torch.float64)
    b = torch.randn(ws[0], dtype=torch.float64)
    y_shape = full_conv_reference(x, w, b, stride, dilation, groups).shape
    r = torch.randn(*y_shape[:2], *[s - shrink for s in y_shape[2:]], dtype=torch.float64)
    leaves = [t.to(device=device, dtype=dtype).requires_grad_() for t in (x, w, b, r)]
    y = fullconv.full_conv_residual(*leaves[:3], leaves[3], stride, dilation, groups, relu=relu)
    ref_leaves = [t.clone().requires_grad_() for t in (x, w, b, r)]
    y_ref = full_conv_reference(*ref_leaves[:3], stride, dilation, groups) + centred_pad(ref_leaves[3], y_shape and torch.empty(y_shape))
    y_ref = torch.relu(y_ref) if relu else y_ref
    assert_close_scaled(y, y_ref, dtype, "forward")
    if dtype == torch.float64:
        gy = torch.randn(y_shape, dtype=torch.float64)
        for g, gr in zip(torch.autograd.grad(y, leaves, gy.to(device)), torch.autograd.grad(y_ref, ref_leaves, gy)):
            assert_close_scaled(g, gr, dtype, "grad")


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape,shrink", [((2, 3, 9), 4), ((2, 3, 7, 8), 2), ((1, 2, 5, 6, 7), 2), ((2, 3, 6, 6), 0)])
def test_padded_add_matches_unfused(shape, shrink, relu, dtype, any_device):
    x = torch.randn(shape, dtype=torch.float64)
    r = torch.randn(*shape[:2], *[s - shrink for s in shape[2:]], dtype=torch.float64)
    xl, rl = (t.to(device=any_device, dtype=dtype).requires_grad_() for t in (x, r))
    y = fullconv.padded_add(xl, rl, relu=relu)
    xr, rr = (t.clone().requires_grad_() for t in (x, r))
    y_ref = xr + centred_pad(rr, xr)
    y_ref = torch.relu(y_ref) if relu else y_ref
    assert_close_scaled(y, y_ref, dtype, "forward")
    gy = torch.randn(shape, dtype=torch.float64)
    for g, gr in zip(torch.autograd.grad(y, (xl, rl), gy.to(device=any_device, dtype=dtype)),
                     torch.autograd.grad(y_ref, (xr, rr), gy)):
        assert_close_scaled(g, gr, dtype, "grad")


def test_epilogue_gradcheck_and_opcheck(any_device):
    opts = dict(dtype=torch.float64, device=any_device, requires_grad=True)
    x, w, b = torch.randn(2, 3, 5, 4, **opts), torch.randn(4, 3, 3, 2, **opts), torch.randn(4, **opts)
    r = torch.randn(2, 4, 5, 3, **opts)
    args = (x, w, b, r, [1, 1], [1, 1], 1, [1, 1], True)
    torch.library.opcheck(torch.ops.fullconv.full_conv_residual.default, args)
    torch.library.opcheck(torch.ops.fullconv.padded_add.default, (torch.randn(2, 4, 7, 5, **opts), r, [1, 1], True))
    # away from the ReLU kink for gradcheck
    assert torch.autograd.gradcheck(lambda *a: torch.ops.fullconv.full_conv_residual(*a, [1, 2], [1, 1], 1, [1, 0], False),
                                    (x, w, b, torch.randn(2, 4, 5, 3, **opts)))
    assert torch.autograd.gradcheck(lambda a, c: torch.ops.fullconv.padded_add(a, c, [2], False),
                                    (torch.randn(2, 3, 9, **opts), torch.randn(2, 3, 5, **opts)))


def test_epilogue_compile():
    torch._dynamo.reset()
    x, w, r = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3), torch.randn(2, 4, 6, 6)
    f = torch.compile(lambda x, w, r: fullconv.full_conv_residual(x, w, None, r, relu=True), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(f(x, w, r), fullconv.full_conv_residual(x, w, None, r, relu=True))


def test_epilogue_errors():
    x, w = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match="difference must be even"):
        fullconv.full_conv_residual(x, w, None, torch.randn(2, 4, 7, 7))
    with pytest.raises(ValueError, match="does not match"):
        fullconv.padded_add(torch.randn(2, 4, 8, 8), torch.randn(2, 3, 6, 6))
    with pytest.raises(TypeError, match="dtype"):
        fullconv.padded_add(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 6, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="does not match"):
        torch.ops.fullconv.padded_add(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 6, 6), [2, 2], False)
    with pytest.raises(ValueError, match="non-negative"):
        torch.ops.fullconv.padded_add(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 10, 10), [-1, -1], False)


def test_autocast_padded_add_refuses_unsupported_input_dtypes():
    # its autocast kernel promotes the operands, but an integer or bool input stays refused
    for dtype in (torch.int64, torch.bool):
        with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(TypeError, match="unsupported dtype"):
            fullconv.padded_add(torch.ones(1, 1, 4, 4, dtype=dtype), torch.randn(1, 1, 2, 2))


def test_autocast_promotes_padded_add():
    x = torch.randn(2, 3, 6, 6, dtype=torch.bfloat16)
    r = torch.randn(2, 3, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fullconv.padded_add(x, r.to(torch.bfloat16)).dtype == torch.bfloat16
        assert torch.ops.fullconv.padded_add(x, r, [1, 1], True).dtype == torch.float32


@pytest.mark.parametrize("op", ["padded_add", "full_conv_residual"])
def test_relu_backward_is_zero_at_clamped_outputs_whatever_the_gradient(op, any_device):
    """As torch.relu: an inf or NaN gradient arriving at an output the ReLU clamped gives 0,
    not inf * 0 = NaN."""
    x = torch.tensor([[[-1.0, 2.0, -3.0]]], device=any_device, requires_grad=True)
    r = torch.tensor([[[0.5]]], device=any_device)
    gy = torch.tensor([[[float("inf"), 1.0, float("nan")]]], device=any_device)
    if op == "padded_add":
        y = fullconv.padded_add(x, r, relu=True)
        want = torch.autograd.grad(torch.relu(x + F.pad(r, (1, 1))), x, gy)[0]
    else:
        w = torch.ones(1, 1, 1, device=any_device)
        y = fullconv.full_conv_residual(x, w, None, r, relu=True)
        want = torch.autograd.grad(torch.relu(F.conv1d(x, w) + F.pad(r, (1, 1))), x, gy)[0]
    got = torch.autograd.grad(y, x, gy)[0]
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.nan_to_num(), want.nan_to_num())
    assert got.tolist() == [[[0.0, 1.0, 0.0]]]


@pytest.mark.parametrize("bias,needs", [(bias, needs) for bias in (False, True)
                                         for needs in ("x", "w", "b", "r", "xr", "wbr") if bias or "b" not in needs])
def test_residual_gradients_of_each_input_subset(bias, needs, any_device):
    """The C++ autograd formula asks the backward for the gradients of exactly the inputs that
    need one (the tensor inputs counted without an absent bias) and gives the residual the
    centre of the gradient through the ReLU."""
    torch.manual_seed(3)
    opts = dict(dtype=torch.float64, device=any_device)
    x, w, r = torch.randn(2, 3, 5, 4, **opts), torch.randn(4, 3, 3, 2, **opts), torch.randn(2, 4, 5, 3, **opts)
    b = torch.randn(4, **opts) if bias else None
    named = {"x": x, "w": w, "b": b, "r": r}
    for k in needs:
        named[k].requires_grad_()
    inputs = [named[k] for k in needs]
    y = fullconv.full_conv_residual(x, w, b, r, relu=True)
    ref = torch.relu(F.conv2d(x, w, b, 1, (2, 1)) + centred_pad(r, y))
    gy = torch.randn_like(y)
    for got, want in zip(torch.autograd.grad(y, inputs, gy), torch.autograd.grad(ref, inputs, gy)):
        torch.testing.assert_close(got, want)
    p = fullconv.padded_add(ref.detach(), r, relu=True)
    if r.requires_grad:
        torch.testing.assert_close(torch.autograd.grad(p, r, gy)[0],
                                   torch.autograd.grad(torch.relu(ref.detach() + centred_pad(r, y)), r, gy)[0])


def test_epilogue_gradgradcheck(any_device):
    opts = dict(dtype=torch.float64, device=any_device, requires_grad=True)
    x, w, b = torch.randn(1, 2, 4, 3, **opts), torch.randn(3, 2, 2, 2, **opts), torch.randn(3, **opts)
    r = torch.randn(1, 3, 3, 2, **opts)
    assert torch.autograd.gradgradcheck(
        lambda *a: torch.ops.fullconv.full_conv_residual(*a, [1, 1], [1, 1], 1, [1, 1], False), (x, w, b, r))
    assert torch.autograd.gradgradcheck(lambda a, c: torch.ops.fullconv.padded_add(a, c, [1, 1], False),
                                        (torch.randn(1, 3, 5, 4, **opts), r))


def test_eager_autograd_nodes_are_cpp():
    """The operators' eager autograd formulas are the C++ ones (csrc/autograd.cpp)."""
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, requires_grad=True)
    y = fullconv.full_conv2d(x, w)
    z = fullconv.full_conv_residual(x, w, None, torch.randn(1, 3, 5, 5), relu=True)
    p = fullconv.padded_add(y, torch.randn(1, 3, 5, 5), relu=True)
    assert y.grad_fn.name().endswith("fullconv::FullConvBackward>")
    assert z.grad_fn.name().endswith("fullconv::FullConvResidualBackward>")
    assert p.grad_fn.name().endswith("fullconv::PaddedAddBackward>")
