"""Every bad input gets a clear Python exception naming the problem; never a crash."""
import re

import pytest
import torch

import fullconv
from fullconv import FullConvError, FullConvTypeError

x2 = torch.randn(2, 4, 5, 5)
w2 = torch.randn(6, 4, 3, 3)

CASES = [
    # (description, call, exception type, message fragment)
    ("input not a tensor", lambda: fullconv.full_conv2d([[1.0]], w2), TypeError, "input must be a Tensor"),
    ("weight not a tensor", lambda: fullconv.full_conv2d(x2, 3.0), TypeError, "weight must be a Tensor"),
    ("bias not a tensor", lambda: fullconv.full_conv2d(x2, w2, [0.0] * 6), TypeError, "bias must be a Tensor"),
    ("weight dims", lambda: fullconv.full_conv2d(x2, torch.randn(6, 4, 3)), ValueError, "weight must be 4-D"),
    ("input dims", lambda: fullconv.full_conv2d(torch.randn(4, 5), w2), ValueError, r"expected 3-D \(unbatched\) or 4-D"),
    ("input 5-D for 2-D", lambda: fullconv.full_conv2d(torch.randn(1, 2, 4, 5, 5), w2), ValueError, "expected 3-D"),
    ("channel mismatch", lambda: fullconv.full_conv2d(torch.randn(2, 3, 5, 5), w2), ValueError, "channels"),
    ("groups mismatch", lambda: fullconv.full_conv2d(x2, torch.randn(6, 4, 3, 3), groups=2), ValueError, "groups=2"),
    ("out_channels not divisible", lambda: fullconv.full_conv2d(x2, torch.randn(5, 2, 3, 3), groups=2), ValueError, "divisible"),
    ("groups zero", lambda: fullconv.full_conv2d(x2, w2, groups=0), ValueError, "groups must be positive"),
    ("groups float", lambda: fullconv.full_conv2d(x2, w2, groups=1.5), TypeError, "groups must be an int"),
    ("stride zero", lambda: fullconv.full_conv2d(x2, w2, stride=0), ValueError, "stride must be positive"),
    ("stride negative", lambda: fullconv.full_conv2d(x2, w2, stride=(1, -1)), ValueError, "stride must be positive"),
    ("dilation zero", lambda: fullconv.full_conv2d(x2, w2, dilation=0), ValueError, "dilation must be positive"),
    ("stride tuple length", lambda: fullconv.full_conv2d(x2, w2, stride=(1, 2, 3)), ValueError, "stride must be an int or a tuple of 2"),
    ("dilation tuple length", lambda: fullconv.full_conv2d(x2, w2, dilation=(1, 1, 1)), ValueError, "dilation must be an int or a tuple of 2"),
    ("stride type", lambda: fullconv.full_conv2d(x2, w2, stride="2"), TypeError, "stride"),
    ("stride float entries", lambda: fullconv.full_conv2d(x2, w2, stride=(1.0, 2.0)), TypeError, "stride entries"),
    ("dtype mismatch", lambda: fullconv.full_conv2d(x2.double(), w2), TypeError, "same dtype"),
    ("bias dtype", lambda: fullconv.full_conv2d(x2, w2, torch.zeros(6, dtype=torch.float64)), TypeError, "bias must have the dtype"),
    ("bias shape", lambda: fullconv.full_conv2d(x2, w2, torch.zeros(5)), ValueError, "bias must be 1-D"),
    ("bias 2-D", lambda: fullconv.full_conv2d(x2, w2, torch.zeros(6, 1)), ValueError, "bias must be 1-D"),
    ("integer dtype", lambda: fullconv.full_conv2d(x2.long(), w2.long()), TypeError, "unsupported dtype"),
    ("complex dtype", lambda: fullconv.full_conv2d(x2.to(torch.complex64), w2.to(torch.complex64)), TypeError, "unsupported dtype"),
    ("zero-size kernel", lambda: fullconv.full_conv2d(x2, torch.randn(6, 4, 0, 3)), ValueError, "kernel size must be positive"),
    ("zero out_channels", lambda: fullconv.full_conv2d(x2, torch.randn(0, 4, 3, 3)), ValueError, "at least one output channel"),
    ("empty spatial", lambda: fullconv.full_conv2d(torch.randn(2, 4, 0, 5), w2), ValueError, "may be empty"),
    ("device mismatch", lambda: fullconv.full_conv2d(x2, w2.to("meta")), ValueError, "same device"),
    ("bias device", lambda: fullconv.full_conv2d(x2, w2, torch.zeros(6, device="meta")), ValueError, "device"),
    ("stride beyond int64", lambda: fullconv.full_conv2d(x2, w2, stride=2 ** 63), ValueError, "64-bit integer"),
    ("stride entry beyond int64", lambda: fullconv.full_conv2d(x2, w2, stride=(1, -2 ** 64)), ValueError,
     "64-bit integer"),
    ("dilation overflowing the padding", lambda: fullconv.full_conv2d(x2, w2, dilation=2 ** 62), ValueError,
     "64-bit index range"),
    ("output bytes beyond int64", lambda: fullconv.full_conv2d(x2, w2, dilation=2 ** 31), ValueError,
     "more bytes than a 64-bit size"),
    ("empty spatial dim with a 1-wide kernel, zero batch",
     lambda: fullconv.full_conv2d(torch.randn(0, 4, 0, 5), torch.randn(6, 4, 1, 3)), ValueError, "no output position"),
    ("empty spatial dim, unbatched", lambda: fullconv.full_conv2d(torch.randn(4, 0, 5), w2), ValueError, "may be empty"),
]


@pytest.mark.parametrize("desc,call,exc,fragment", CASES, ids=[c[0] for c in CASES])
def test_python_api_errors(desc, call, exc, fragment):
    with pytest.raises(exc, match=fragment) as info:
        call()
    # code written against F.convNd catches RuntimeError; ours are RuntimeErrors too
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value, (FullConvError, FullConvTypeError))


OP_CASES = [
    ("weight dims", (x2, torch.randn(6, 4), None, [1, 1], [1, 1], 1), "weight must have 3, 4 or 5 dims"),
    ("input dims", (torch.randn(5, 5), w2, None, [1, 1], [1, 1], 1), "expected 3-D"),
    ("stride length", (x2, w2, None, [1], [1, 1], 1), "stride must have 2 entries"),
    ("dilation length", (x2, w2, None, [1, 1], [1, 1, 1], 1), "dilation must have 2 entries"),
    ("stride zero", (x2, w2, None, [0, 1], [1, 1], 1), "stride must be positive"),
    ("dilation negative", (x2, w2, None, [1, 1], [-1, 1], 1), "dilation must be positive"),
    ("groups", (x2, w2, None, [1, 1], [1, 1], 0), "groups must be positive"),
    ("channels", (torch.randn(2, 3, 5, 5), w2, None, [1, 1], [1, 1], 1), "channels"),
    ("dtype", (x2.double(), w2, None, [1, 1], [1, 1], 1), "same dtype"),
    ("int dtype", (x2.int(), w2.int(), None, [1, 1], [1, 1], 1), "unsupported dtype"),
    ("bias", (x2, w2, torch.zeros(3), [1, 1], [1, 1], 1), "bias must be 1-D"),
    ("empty kernel", (x2, torch.randn(6, 4, 3, 0), None, [1, 1], [1, 1], 1), "kernel size must be positive"),
    ("dilation overflowing the padding", (x2, w2, None, [1, 1], [1, 2 ** 61], 1), "64-bit index range"),
    ("output bytes beyond int64", (x2, w2, None, [1, 1], [2 ** 31, 2 ** 31], 1), "more bytes than a 64-bit size"),
    ("empty spatial dim, batch 2", (torch.randn(2, 4, 0, 5), w2, None, [1, 1], [1, 1], 1), "may be empty"),
    ("empty spatial dim, 1-wide kernel", (torch.randn(0, 4, 0, 5), torch.randn(6, 4, 1, 3), None, [1, 1], [1, 1], 1),
     "no output position"),
]


@pytest.mark.parametrize("shape,kernel,stride", [((0, 4, 0, 6), (3, 3), 1), ((0, 4, 0, 6), (3, 3), 2),
                                                 ((0, 4, 0, 6), (2, 3), 1), ((0, 4, 0, 0), (2, 2), (2, 1)),
                                                 ((0, 2, 0), (3,), 1), ((0, 2, 3, 0, 1), (1, 2, 1), 1)])
def test_zero_batch_with_empty_spatial_dims_as_torch(shape, kernel, stride, any_device):
    """F.convNd accepts an empty spatial dim in a zero-batch input (where the padded extent
    holds the kernel); so does fullconv, with the same output shape and empty gradients."""
    import torch.nn.functional as F
    nd = len(kernel)
    x = torch.randn(shape, device=any_device, requires_grad=True)
    w = torch.randn((6, shape[1]) + kernel, device=any_device, requires_grad=True)
    b = torch.randn(6, device=any_device, requires_grad=True)
    fn = getattr(fullconv, f"full_conv{nd}d")
    y = fn(x, w, b, stride)
    ref = getattr(F, f"conv{nd}d")(x, w, b, stride, [k - 1 for k in kernel])
    assert y.shape == ref.shape
    gx, gw, gb = torch.autograd.grad(y.sum(), (x, w, b))
    assert gx.shape == x.shape and torch.equal(gw, torch.zeros_like(w)) and torch.equal(gb, torch.zeros_like(b))
    assert torch.ops.fullconv.full_conv(x.detach().to("meta"), w.detach().to("meta"), None,
                                        [stride] * nd if isinstance(stride, int) else list(stride), [1] * nd,
                                        1).shape == ref.shape


@pytest.mark.parametrize("desc,args,fragment", OP_CASES, ids=[c[0] for c in OP_CASES])
def test_raw_op_errors(desc, args, fragment):
    # Direct calls to torch.ops.fullconv.* are checked in C++ (ValueError / TypeError).
    with pytest.raises((ValueError, TypeError), match=fragment):
        torch.ops.fullconv.full_conv(*args)


def test_backward_op_errors():
    y = fullconv.full_conv2d(x2, w2)
    # both shapes as lists, the same in the C++ kernel's message and the fake kernel's
    expected = re.escape(f"grad_output must have the output's shape {list(y.shape)}, got {list(y[:, :, 1:].shape)}")
    with pytest.raises(ValueError, match=expected):
        torch.ops.fullconv.full_conv_backward(y[:, :, 1:], x2, w2, [1, 1], [1, 1], 1, [True, True, True])
    with pytest.raises(ValueError, match=expected):
        torch.ops.fullconv.full_conv_backward(y[:, :, 1:].to("meta"), x2.to("meta"), w2.to("meta"), [1, 1], [1, 1],
                                              1, [True, True, True])
    with pytest.raises(TypeError, match="grad_output must have dtype"):
        torch.ops.fullconv.full_conv_backward(y.double(), x2, w2, [1, 1], [1, 1], 1, [True, True, True])
    # the fake kernel checks grad_output like the C++ kernels (a meta grad_output would
    # otherwise dispatch there and return uninitialised CPU tensors)
    with pytest.raises(ValueError, match="grad_output must be on cpu"):
        torch.ops.fullconv.full_conv_backward(y.to("meta"), x2, w2, [1, 1], [1, 1], 1, [True, True, True])
    with pytest.raises(TypeError, match="grad_output must have dtype"):
        torch.ops.fullconv.full_conv_backward(y.double().to("meta"), x2.to("meta"), w2.to("meta"), [1, 1], [1, 1], 1,
                                              [True, True, True])


def test_meta_shape_errors_match():
    # The fake kernel refuses the same inputs (torch.compile / meta tensors).
    with pytest.raises(ValueError, match="channels"):
        torch.ops.fullconv.full_conv(torch.empty(2, 3, 5, 5, device="meta"),
                                     torch.empty(6, 4, 3, 3, device="meta"), None, [1, 1], [1, 1], 1)


def test_unknown_cpu_algorithm_is_refused(monkeypatch):
    monkeypatch.setenv("FULLCONV_CPU_ALGORITHM", "fastest")
    with pytest.raises(ValueError, match="auto, gemm, direct or blocked"):
        fullconv.full_conv2d(torch.randn(1, 2, 4, 4), torch.randn(3, 2, 3, 3))


@pytest.mark.skipif(not torch.ops.fullconv._cpu_blocked_available(), reason="CPU without AVX2/FMA")
@pytest.mark.parametrize("variable,value,message", [
    ("FULLCONV_CPU_BLOCKED_INPUT", "sometimes", "auto, copy or inplace"),
    ("FULLCONV_CPU_BLOCKED_ISA", "sse2", "auto, avx2 or avx512"),
    ("FULLCONV_CPU_BLOCKED_TILE", "wide", "auto or narrow"),
    ("FULLCONV_CPU_TILE_POSITIONS", "12", "auto or 6"),
    ("FULLCONV_CPU_GATHER", "numpy", "auto or aten"),
    ("FULLCONV_CPU_GROUPED", "on", "auto or off"),
])
def test_unknown_blocked_switch_value_is_refused(monkeypatch, variable, value, message):
    monkeypatch.setenv("FULLCONV_CPU_ALGORITHM", "blocked")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=message):
        fullconv.full_conv2d(torch.randn(1, 20, 4, 4), torch.randn(8, 20, 3, 3))


@pytest.mark.skipif(not torch.ops.fullconv._cpu_blocked_available(), reason="CPU without AVX2/FMA")
def test_blocked_path_takes_reduced_precision_in_float32(monkeypatch):
    monkeypatch.setenv("FULLCONV_CPU_ALGORITHM", "blocked")
    x, w = torch.randn(2, 5, 6, 6), torch.randn(16, 5, 3, 3)
    out = fullconv.full_conv2d(x.bfloat16(), w.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), torch.nn.functional.conv2d(x.bfloat16().float(), w.bfloat16().float(), padding=2),
                               rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("nd", [2, 3])
def test_unbatched_input_with_channels_last_weight(nd):
    # F.convNd accepts it (the unbatched output has no channels-last format): so do we, on the
    # kernels and the fake kernel alike.
    fmt = torch.channels_last if nd == 2 else torch.channels_last_3d
    x = torch.randn(4, *(5,) * nd, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4, *(3,) * nd, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    fn = {2: fullconv.full_conv2d, 3: fullconv.full_conv3d}[nd]
    conv = {2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}[nd]
    y = fn(x, w)
    y_ref = conv(x, w, None, 1, 2)
    torch.testing.assert_close(y, y_ref)
    g = torch.autograd.grad(y.square().sum(), (x, w))
    g_ref = torch.autograd.grad(y_ref.square().sum(), (x, w))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)
    assert fn(x.detach().to("meta"), w.detach().to("meta")).shape == y.shape


@pytest.mark.parametrize("args", [(5, 3, 0), (5, 3, -1), (5, 0), (5, 3, 1, 0), (-1, 3)])
def test_full_output_size_refuses_bad_arguments(args):
    with pytest.raises(FullConvError, match="full_output_size"):
        fullconv.full_output_size(*args)


def test_full_output_size_refuses_non_integers():
    with pytest.raises(FullConvTypeError, match="size must be an int"):
        fullconv.full_output_size(5.5, 3)
    with pytest.raises(FullConvTypeError, match="stride must be an int"):
        fullconv.full_output_size(5, 3, True)


@pytest.mark.parametrize("algorithm", ["auto", "gemm", "direct"] + (
    ["blocked"] if torch.ops.fullconv._cpu_blocked_available() else []))
@pytest.mark.parametrize("stride", [(1, 2 ** 63 - 1), (2 ** 63 - 6, 2 ** 62 + 3)])
def test_strides_near_the_int64_limit(algorithm, stride, monkeypatch):
    # A stride past the padded extent leaves one output position along its dim; the index math
    # must not overflow on the way (forward and both gradients against F.conv2d).
    monkeypatch.setenv("FULLCONV_CPU_ALGORITHM", algorithm)
    x = torch.randn(2, 16, 9, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(16, 16, 3, 3, dtype=torch.float64, requires_grad=True)
    y = fullconv.full_conv2d(x, w, stride=stride)
    y_ref = torch.nn.functional.conv2d(x, w, None, stride, 2)
    torch.testing.assert_close(y, y_ref)
    gy = torch.randn_like(y_ref)
    g = torch.autograd.grad(y, (x, w), gy)
    g_ref = torch.autograd.grad(y_ref, (x, w), gy)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)


def test_residual_padding_near_the_int64_limit_is_refused():
    # residual + 2 * padding would wrap around in 64 bits; the check must not
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="does not match the output shape"):
        torch.ops.fullconv.padded_add(x, torch.ones(1, 2, 7, 5, dtype=torch.float64), [2 ** 63 - 1, 0], False)
    with pytest.raises(ValueError, match="does not match the output shape"):
        torch.ops.fullconv.full_conv_residual(x, w, None, torch.zeros(1, 3, 9, 7, dtype=torch.float64),
                                              [1, 1], [1, 1], 1, [2 ** 63 - 1, 0], False)
    with pytest.raises(ValueError, match="does not match the output shape"):  # the fake kernel alike
        torch.ops.fullconv.padded_add(x.to("meta"), torch.ones(1, 2, 7, 5, dtype=torch.float64, device="meta"),
                                      [2 ** 63 - 1, 0], False)


RESIDUAL_CASES = [
    ("residual dtype", lambda x, w: fullconv.full_conv_residual(x, w, None, torch.zeros(2, 6, 5, 5)),
     FullConvTypeError, "residual must have dtype"),
    ("residual batch", lambda x, w: fullconv.full_conv_residual(x, w, None, torch.zeros(3, 6, 5, 5, dtype=x.dtype)),
     FullConvError, "does not match the output shape"),
    ("residual channels", lambda x, w: fullconv.full_conv_residual(x, w, None, torch.zeros(2, 5, 5, 5, dtype=x.dtype)),
     FullConvError, "does not match the output shape"),
    ("padded_add dtype", lambda x, w: fullconv.padded_add(x, torch.zeros(2, 4, 3, 3)),
     FullConvTypeError, "residual must have dtype"),
    ("padded_add dims", lambda x, w: fullconv.padded_add(x, torch.zeros(4, 3, 3, dtype=x.dtype)),
     FullConvError, "do not fit"),
    ("padded_add integer dtype", lambda x, w: fullconv.padded_add(x.long(), x.long()[:, :, 1:-1, 1:-1]),
     FullConvTypeError, "unsupported dtype"),
    ("padded_add bool dtype", lambda x, w: fullconv.padded_add(x > 0, (x > 0)[:, :, 1:-1, 1:-1]),
     FullConvTypeError, "unsupported dtype"),
    ("padded_add nd float", lambda x, w: fullconv.padded_add(x, x[:, :, 1:-1, 1:-1], nd=2.0),
     FullConvTypeError, "nd must be an int"),
    ("padded_add relu string", lambda x, w: fullconv.padded_add(x, x[:, :, 1:-1, 1:-1], relu="yes"),
     FullConvTypeError, "relu must be a bool"),
    ("residual relu None", lambda x, w: fullconv.full_conv_residual(x, w, None, torch.zeros(2, 6, 5, 5, dtype=x.dtype),
                                                                  relu=None),
     FullConvTypeError, "relu must be a bool"),
]


@pytest.mark.parametrize("desc,call,exc,fragment", RESIDUAL_CASES, ids=[c[0] for c in RESIDUAL_CASES])
def test_residual_api_errors(desc, call, exc, fragment):
    # the fused residual entry points check everything in Python: fullconv's errors (also
    # RuntimeErrors), never a bare TypeError/ValueError from inside
    x, w = torch.randn(2, 4, 5, 5, dtype=torch.float64), torch.randn(6, 4, 3, 3, dtype=torch.float64)
    with pytest.raises(exc, match=fragment) as info:
        call(x, w)
    assert isinstance(info.value, RuntimeError)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_padded_add_op_refuses_integer_dtypes(device):
    x = torch.ones(2, 4, 5, 5, dtype=torch.int64, device=device)
    with pytest.raises(TypeError, match="unsupported dtype"):
        torch.ops.fullconv.padded_add(x, x[:, :, 1:-1, 1:-1], [1, 1], False)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"include": 3}, "include / exclude"), ({"exclude": ["0", 5]}, "include / exclude"),
    ({"example_input": [1, 2]}, "example_input must be a Tensor"),
])
def test_convert_argument_errors(kwargs, fragment):
    with pytest.raises(FullConvTypeError, match=fragment):
        fullconv.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1)), **kwargs)


def test_zero_dim_integer_tensors_as_arguments_as_torch():
    """F.convNd takes 0-d integer tensors for stride, dilation and groups; so does fullconv
    (a float or bool tensor is still refused)."""
    x, w = torch.randn(1, 4, 6, 5), torch.randn(4, 2, 3, 3)
    t = torch.tensor
    got = fullconv.full_conv2d(x, w, None, t(2), (t(1), 2), t(2))
    torch.testing.assert_close(got, fullconv.full_conv2d(x, w, None, 2, (1, 2), 2))
    y = fullconv.full_conv_residual(x, w, None, torch.zeros(1, 4, 2, 2), t(2), 1, t(2))
    torch.testing.assert_close(y, fullconv.full_conv2d(x, w, None, 2, 1, 2))
    with pytest.raises(TypeError, match="stride"):
        fullconv.full_conv2d(x, w, None, t(2.0), 1, 2)
    with pytest.raises(TypeError, match="groups"):
        fullconv.full_conv2d(x, w, None, 1, 1, t(True))


@pytest.mark.parametrize("requires_grad", [False, True])
def test_nested_tensors_are_refused_by_name(requires_grad):
    # a strided nested tensor reaches the autograd kernel, whose bookkeeping would otherwise
    # read its sizes (PyTorch's "Internal error ... Please file an issue")
    x = torch.nested.nested_tensor([torch.randn(3, 5, 5), torch.randn(3, 4, 6)], requires_grad=requires_grad)
    w = torch.randn(2, 3, 3, 3)
    calls = [lambda: fullconv.full_conv2d(x, w), lambda: fullconv.FullConv2d(3, 2, 3)(x),
             lambda: torch.ops.fullconv.full_conv(x, w, None, [1, 1], [1, 1], 1)]
    for call in calls:
        with pytest.raises((TypeError, NotImplementedError), match="nested"):
            call()


def test_cpu_kernel_calls_names_its_kernels():
    assert torch.ops.fullconv._cpu_kernel_calls("tiles") >= 0
    with pytest.raises(ValueError, match="unknown kernel 'nope'.*depthwise_cl"):
        torch.ops.fullconv._cpu_kernel_calls("nope")
