"""Property tests: random configurations vs the reference (hypothesis), and the paper's point
that full convolution removes the border's absolute-position signal."""
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fullconv
from conftest import BACKENDS, backend_env
from helpers import check_against_reference


@st.composite
def conv_config(draw):
    nd = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    cin = groups * draw(st.integers(1, 3))
    # wide enough sometimes for whole and partial register tiles of output channels
    cout = groups * draw(st.sampled_from([1, 2, 3, 9, 20]))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    size = tuple(draw(st.integers(1, 7 if nd < 3 else 5)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    batch = draw(st.sampled_from([None, 0, 1, 2, 3]))
    bias = draw(st.booleans())
    dtype = draw(st.sampled_from([torch.float64, torch.float32, torch.bfloat16, torch.float16]))
    seed = draw(st.integers(0, 2**31 - 1))
    algorithm = draw(st.sampled_from(BACKENDS))
    return nd, groups, cin, cout, kernel, size, stride, dilation, batch, bias, dtype, seed, algorithm


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_config())
def test_random_configurations_match_reference(cfg):
    nd, groups, cin, cout, kernel, size, stride, dilation, batch, bias, dtype, seed, algorithm = cfg
    g = torch.Generator().manual_seed(seed)
    shape = ((batch,) if batch is not None else ()) + (cin,) + size
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    w = torch.randn(cout, cin // groups, *kernel, generator=g, dtype=torch.float64).to(dtype)
    b = torch.randn(cout, generator=g, dtype=torch.float64).to(dtype) if bias else None
    device, env = backend_env(algorithm)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        check_against_reference(x, w, b, stride, dilation, groups, device=device)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _stack(convs, x, same_padding):
    for conv in convs:
        k = conv.weight.shape[-1]
        if same_padding:
            x = F.conv2d(x, conv.weight, None, conv.stride, k // 2)
        else:
            x = conv(x)
        x = torch.relu(x)
    return x.amax(dim=(-2, -1))


@pytest.mark.parametrize("total_stride_shift", [(1, 0), (0, 1), (2, 3), (-1, 2)])
def test_full_conv_stack_is_shift_invariant_same_padding_is_not(total_stride_shift):
    torch.manual_seed(3)
    convs = [fullconv.FullConv2d(1, 4, 3, bias=False).double(),
             fullconv.FullConv2d(4, 4, 3, stride=2, bias=False).double(),
             fullconv.FullConv2d(4, 4, 3, bias=False).double()]
    total_stride = 2
    obj = torch.rand(1, 1, 5, 5, dtype=torch.float64) + 0.5

    def canvas(top, left):
        c = torch.zeros(1, 1, 24, 24, dtype=torch.float64)
        c[..., top:top + 5, left:left + 5] = obj
        return c

    dy, dx = (total_stride * s for s in total_stride_shift)
    a, b = canvas(8, 8), canvas(8 + dy, 8 + dx)
    with torch.no_grad():
        torch.testing.assert_close(_stack(convs, a, False), _stack(convs, b, False),
                                   rtol=1e-12, atol=1e-12)
        # Same padding: moving the object to the image border changes the pooled features
        # (the zero border is seen differently), so location can be decoded.
        corner = canvas(0, 0)
        centre = canvas(9, 9)
        assert not torch.allclose(_stack(convs, corner, True), _stack(convs, centre, True))
        # Full convolution gives the same answer at the border too (shift by a multiple of
        # the total stride).
        torch.testing.assert_close(_stack(convs, canvas(0, 0), False),
                                   _stack(convs, canvas(10, 12), False), rtol=1e-12, atol=1e-12)
