"""FullConv1d/2d/3d: nn.ConvNd compatibility, from_conv, state_dict."""
import pytest
import torch
from torch import nn

import fullconv
from fullconv.reference import full_conv_reference

PAIRS = [(1, nn.Conv1d, fullconv.FullConv1d), (2, nn.Conv2d, fullconv.FullConv2d),
         (3, nn.Conv3d, fullconv.FullConv3d)]


@pytest.mark.parametrize("nd,base,cls", PAIRS)
def test_subclass_state_dict_and_init(nd, base, cls):
    torch.manual_seed(1)
    m = cls(4, 6, 3, stride=2, dilation=2, groups=2)
    torch.manual_seed(1)
    r = base(4, 6, 3, stride=2, padding=4, dilation=2, groups=2)
    assert isinstance(m, base)
    assert m.padding == (4,) * nd and m.padding_mode == "zeros"
    assert m.state_dict().keys() == r.state_dict().keys()
    for k in r.state_dict():
        assert torch.equal(m.state_dict()[k], r.state_dict()[k])  # same initialisation
    m2 = cls(4, 6, 3, stride=2, dilation=2, groups=2)
    m2.load_state_dict(r.state_dict())
    x = torch.randn(2, 4, *(7,) * nd)
    torch.testing.assert_close(m2(x), r(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("nd,base,cls", PAIRS)
def test_positional_arguments_in_nn_conv_order(nd, base, cls):
    """A call written for nn.ConvNd means the same: (in, out, k, stride, padding, dilation,
    groups, bias, padding_mode); the padding may be 'full' or the full padding itself."""
    torch.manual_seed(2)
    r = base(4, 6, 3, 2, 4, 2, 2, False, "zeros")
    torch.manual_seed(2)
    m = cls(4, 6, 3, 2, 4, 2, 2, False, "zeros")
    assert (m.stride, m.padding, m.dilation, m.groups) == (r.stride, r.padding, r.dilation, r.groups)
    assert m.bias is None and torch.equal(m.weight, r.weight)
    x = torch.randn(2, 4, *(6,) * nd)
    torch.testing.assert_close(m(x), r(x), rtol=1e-4, atol=1e-5)
    assert cls(4, 6, 3, 1, "full", 2).padding == (4,) * nd
    assert cls(4, 6, 3, 1, (2,) * nd).dilation == (1,) * nd
    assert cls(4, 6, 1, 1, "same").padding == (0,) * nd  # one tap: no padding either way
    with pytest.raises(ValueError, match="full padding"):
        cls(4, 6, 3, 1, 1)  # nn.ConvNd's same padding for k=3: refused, not taken as a dilation


@pytest.mark.parametrize("nd,base,cls", PAIRS)
def test_from_conv(nd, base, cls):
    conv = base(3, 4, (2, 3, 1)[:nd] if nd > 1 else 3, stride=(2, 1, 1)[:nd] if nd > 1 else 2,
                padding=1, bias=False).double()
    conv.eval()
    f = cls.from_conv(conv)
    assert f.weight.dtype == torch.float64 and not f.training
    assert f.bias is None and f.stride == conv.stride and f.kernel_size == conv.kernel_size
    assert f.weight.data_ptr() != conv.weight.data_ptr()
    x = torch.randn(2, 3, *(5,) * nd, dtype=torch.float64)
    torch.testing.assert_close(f(x), full_conv_reference(x, conv.weight, None, conv.stride))
    with pytest.raises(TypeError):
        cls.from_conv(nn.Linear(2, 2))


def test_unbatched_module_and_repr():
    m = fullconv.FullConv2d(3, 2, (3, 2), stride=(2, 1), bias=False)
    x = torch.randn(3, 5, 6)
    assert m(x).shape == (2, 4, 7)
    assert "padding=full" in repr(m) and "bias=False" in repr(m)


@pytest.mark.parametrize("kwargs,exc", [
    (dict(padding=1), ValueError), (dict(padding="same"), ValueError),
    (dict(padding_mode="circular"), ValueError), (dict(padding_mode="reflect"), ValueError),
    (dict(foo=1), TypeError), (dict(stride=0), ValueError), (dict(dilation=0), ValueError),
    (dict(kernel_size=0), ValueError), (dict(groups=3), ValueError),
    (dict(stride=(1, 2, 3)), ValueError),
])
def test_module_bad_arguments(kwargs, exc):
    args = dict(in_channels=4, out_channels=4, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(exc):
        fullconv.FullConv2d(**args)


def test_module_device_dtype_and_meta_to_empty():
    m = fullconv.FullConv1d(2, 3, 3, dtype=torch.float64)
    assert m.weight.dtype == torch.float64
    m = fullconv.FullConv2d(2, 3, 3, device="meta").to_empty(device="cpu")
    m.reset_parameters()
    assert m(torch.randn(1, 2, 4, 4)).shape == (1, 3, 6, 6)


def test_reduced_precision_module():
    for dtype in (torch.bfloat16, torch.float16):
        m = fullconv.FullConv2d(3, 4, 3).to(dtype)
        x = torch.randn(2, 3, 6, 6, dtype=dtype)
        y = m(x)
        assert y.dtype == dtype
        r = full_conv_reference(x.float(), m.weight.float(), m.bias.float())
        torch.testing.assert_close(y.float(), r, rtol=3e-2, atol=3e-2)


def test_from_conv_refuses_other_padding_modes_and_uninitialized_lazy_convs():
    conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        fullconv.FullConv2d.from_conv(conv)
    f = fullconv.FullConv2d.from_conv(conv, convert_padding_mode=True)
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(f(x), full_conv_reference(x, conv.weight, conv.bias))
    lazy = nn.LazyConv2d(4, 3)
    with pytest.raises(TypeError, match="uninitialized"):
        fullconv.FullConv2d.from_conv(lazy)
    lazy(torch.randn(1, 3, 5, 5))  # initialised: converts like any Conv2d
    assert fullconv.FullConv2d.from_conv(lazy).in_channels == 3


@pytest.mark.parametrize("nd,base,cls", PAIRS)
def test_padding_follows_kernel_size_and_dilation(nd, base, cls):
    torch.manual_seed(2)
    m = cls(2, 3, 3)
    assert m.padding == (2,) * nd
    m.dilation = (2,) * nd  # reassigned after construction: .padding follows, as the forward does
    assert m.padding == (4,) * nd
    x = torch.randn(1, 2, *(6,) * nd, dtype=torch.float64)
    m.double()
    torch.testing.assert_close(m(x), full_conv_reference(x, m.weight, m.bias, 1, 2, 1))
    ref = base(2, 3, 3, padding=m.padding, dilation=2, dtype=torch.float64)
    ref.load_state_dict(m.state_dict())
    torch.testing.assert_close(m(x), ref(x))
    m.padding = "full"  # accepted: it is the full padding
    m.padding = (4,) * nd
    with pytest.raises(fullconv.FullConvError, match="full padding"):
        m.padding = (1,) * nd
    assert m.padding == (4,) * nd
    # a converted nn.ConvNd reports the full padding the same way
    c = cls.convert_in_place(base(2, 3, 3, padding=1))
    c.dilation = (3,) * nd
    assert c.padding == (6,) * nd and "padding" not in c.__dict__
    # copies and pickles keep it
    import copy
    import io
    assert copy.deepcopy(m).padding == (4,) * nd
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=False).padding == (4,) * nd


def test_export_and_jit_trace_record_the_op():
    torch.manual_seed(3)
    m = nn.Sequential(fullconv.FullConv2d(3, 4, 3, stride=2), nn.ReLU(), fullconv.FullConv2d(4, 2, 2, dilation=2))
    x = torch.randn(2, 3, 9, 9)
    ep = torch.export.export(m, (x,))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert sum("fullconv.full_conv" in t for t in targets) == 2, targets
    torch.testing.assert_close(ep.module()(x), m(x))
    traced = torch.jit.trace(m, x)
    assert "fullconv::full_conv" in str(traced.inlined_graph)
    x2 = torch.randn(1, 3, 6, 7)  # the op itself, not a recorded shape
    torch.testing.assert_close(traced(x2), m(x2))
    import io
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.jit.load(buf)(x2), m(x2))
