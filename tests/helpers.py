"""Shared test helpers: reference comparison with dtype-aware tolerances."""
import torch

from fullconv.reference import full_conv_reference

FUNCS = None


def functional(nd):
    import fullconv
    return {1: fullconv.full_conv1d, 2: fullconv.full_conv2d, 3: fullconv.full_conv3d}[nd]


# (rtol, atol relative to the output scale) per working dtype
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-4, 1e-4),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (3e-2, 3e-2),
}


def assert_close_scaled(actual, expected, dtype, what=""):
    """|a - e| <= atol * scale + rtol * |e| with scale = max|e| (outputs of convolutions sum
    many products, so absolute errors grow with the output's magnitude)."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    rtol, atol = TOL[dtype]
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    scale = max(e.abs().max().item() if e.numel() else 0.0, 1.0)
    err = (a - e).abs()
    bound = atol * scale + rtol * e.abs()
    bad = ~(err <= bound)
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {e.numel()} elements off, max err "
                           f"{err.max().item():.3g} (scale {scale:.3g}, dtype {dtype})")


def is_close_scaled(actual, expected, dtype):
    try:
        assert_close_scaled(actual, expected, dtype)
        return True
    except AssertionError:
        return False


def check_against_reference(x, w, b, stride, dilation, groups, grads=True, device="cpu"):
    """Forward and all three gradients of fullconv on `device` vs F.convNd(padding=d(k-1)):
    against the fp64 CPU reference of the same values, and against the reference in the
    working dtype on the same device."""
    dtype = x.dtype
    nd = w.dim() - 2
    fn = functional(nd)
    leaves = [t.detach().to(device).requires_grad_(grads) if t is not None else None
              for t in (x, w, b)]
    if device != "cpu" and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        leaves[0] = leaves[0].detach().contiguous(memory_format=torch.channels_last).requires_grad_(grads)
    y = fn(leaves[0], leaves[1], leaves[2], stride, dilation, groups)
    ref_leaves = [t.detach().double().requires_grad_(grads) if t is not None else None
                  for t in (x, w, b)]
    y_ref = full_conv_reference(ref_leaves[0], ref_leaves[1], ref_leaves[2], stride, dilation,
                                groups)
    assert y.dtype == dtype and y.device.type == torch.device(device).type
    assert_close_scaled(y, y_ref, dtype, "forward vs fp64 reference")
    if dtype != torch.float64:
        y_work = full_conv_reference(*[t.detach().to(device) if t is not None else None
                                       for t in (x, w, b)], stride, dilation, groups)
        # The working-dtype reference is itself checked against fp64 first: PyTorch's CPU
        # bfloat16 conv3d returns wrong values for some tiny problems (e.g. a 1x1x1 input,
        # kernel 2x2x4, padding (1, 1, 3): the first output plane comes back as zeros), and a
        # broken baseline says nothing about fullconv, which already met the fp64 reference.
        if is_close_scaled(y_work, y_ref, dtype):
            assert_close_scaled(y, y_work, dtype, "forward vs working-dtype reference")
    if not grads:
        return y
    gy = torch.randn(y_ref.shape, dtype=torch.float64)
    inputs = [t for t in leaves if t is not None]
    ref_inputs = [t for t in ref_leaves if t is not None]
    if y.numel() == 0:
        return y
    got = torch.autograd.grad(y, inputs, gy.to(dtype).to(device))
    want = torch.autograd.grad(y_ref, ref_inputs, gy)
    for name, g, r, leaf in zip(("grad_input", "grad_weight", "grad_bias"), got, want, inputs):
        assert g.dtype == dtype and g.shape == leaf.shape, name
        assert_close_scaled(g, r, dtype, f"{name} vs fp64 reference")
    return y
