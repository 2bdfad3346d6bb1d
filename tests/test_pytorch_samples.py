"""PyTorch's own convolution samples (the OpInfo entries of ``nn.functional.conv1d/2d/3d``
and the ModuleInfo entries of ``nn.Conv1d/2d/3d``) run through fullconv.

Each sample keeps its tensors, stride, dilation and groups; its padding is replaced by the
full padding ``dilation*(k-1)``, which is what fullconv computes. The samples cover batched
and unbatched inputs, bias or none, groups, anisotropic strides and dilations, kernels larger
than the input and, through ``SampleInput.noncontiguous()``, inputs and weights that are not
contiguous. Every sample meets the fp64 reference in every working dtype PyTorch lists for
the op (forward and all gradients, on every kernel path), gradcheck in float64 and opcheck;
the dtypes PyTorch lists but fullconv does not compute (integers, complex) must be refused
with fullconv's type error.
"""
import pytest
import torch
import torch.nn.functional as F
from torch.testing._internal.common_methods_invocations import op_db
from torch.testing._internal.common_modules import module_db
from torch.testing._internal.common_utils import noncontiguous_like

import fullconv
from helpers import assert_close_scaled, check_against_reference, functional

OPS = {f"nn.functional.conv{nd}d": nd for nd in (1, 2, 3)}
WORKING = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _tuple_arg(value, nd):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * nd


def _collect():
    """(id, nd, input, weight, bias, stride, dilation, groups, noncontiguous) of every sample,
    in float64 on the CPU; each sample twice: as it is, and in its non-contiguous form."""
    out = []
    infos = [o for o in op_db if o.name in OPS]
    assert len(infos) == 3, "PyTorch's conv OpInfos not found"
    for info in infos:
        nd = OPS[info.name]
        for i, sample in enumerate(info.sample_inputs("cpu", torch.float64, requires_grad=False)):
            weight = sample.args[0]
            bias = sample.args[1] if len(sample.args) > 1 else sample.kwargs.get("bias")
            kw = sample.kwargs
            for layout in ("contiguous", "noncontiguous"):
                out.append((f"conv{nd}d-{i}-{layout}", nd, sample.input, weight, bias,
                            _tuple_arg(kw.get("stride", 1), nd), _tuple_arg(kw.get("dilation", 1), nd),
                            kw.get("groups", 1), layout == "noncontiguous"))
    return out


SAMPLES = _collect()


def _tensors(sample, dtype, device="cpu"):
    """The sample's input, weight and bias in `dtype` on `device`; for the non-contiguous form,
    each tensor in a buffer with gaps between its elements (PyTorch's noncontiguous_like)."""
    *_, noncontiguous = sample
    out = []
    for t in sample[2:5]:
        if t is not None:
            t = t.detach().to(device, dtype)
            if noncontiguous:
                t = noncontiguous_like(t)
                assert t.numel() <= 1 or not t.is_contiguous()
        out.append(t)
    return out
IDS = [s[0] for s in SAMPLES]
SUPPORTED_BY_TORCH = {name: o.supported_dtypes("cpu") for o in op_db for name in (o.name,) if name in OPS}


def test_samples_cover_what_they_should():
    # the properties the samples are here for: a change in PyTorch's sample lists that drops
    # them would otherwise pass silently
    assert len(SAMPLES) >= 100
    assert any(s[2].dim() == s[3].dim() - 1 for s in SAMPLES), "unbatched inputs"
    assert any(s[7] > 1 for s in SAMPLES), "groups"
    assert any(len(set(s[5])) > 1 for s in SAMPLES), "anisotropic stride"
    assert any(max(s[6]) > 1 for s in SAMPLES), "dilation"
    assert any(s[4] is None for s in SAMPLES) and any(s[4] is not None for s in SAMPLES), "bias or none"
    assert any(s[8] for s in SAMPLES), "non-contiguous tensors"


@pytest.mark.parametrize("dtype", WORKING, ids=str)
@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_sample_matches_reference(sample, dtype, device):
    _, nd, _, _, _, stride, dilation, groups, _ = sample
    assert dtype in SUPPORTED_BY_TORCH[f"nn.functional.conv{nd}d"]
    x, w, b = _tensors(sample, dtype)
    check_against_reference(x, w, b, stride, dilation, groups, device=device)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_sample_gradcheck_and_opcheck(sample, any_device):
    _, nd, _, _, _, stride, dilation, groups, _ = sample
    leaves = [t.requires_grad_() if t is not None else None for t in _tensors(sample, torch.float64, any_device)]
    fn = functional(nd)
    assert torch.autograd.gradcheck(lambda *a: fn(*a, stride, dilation, groups), tuple(leaves),
                                    check_forward_ad=True, check_batched_grad=True)
    torch.library.opcheck(torch.ops.fullconv.full_conv.default, (*leaves, list(stride), list(dilation), groups))


@pytest.mark.parametrize("op", sorted(OPS))
def test_dtypes_torch_lists_but_fullconv_refuses(op, any_device):
    nd = OPS[op]
    unsupported = [d for d in SUPPORTED_BY_TORCH[op] if d not in WORKING]
    assert unsupported, "PyTorch lists integer and complex dtypes for its convolutions"
    sample = next(s for s in SAMPLES if s[1] == nd and s[4] is not None)
    _, _, x, w, b, stride, dilation, groups, _ = sample
    for dtype in unsupported:
        with pytest.raises(fullconv.FullConvTypeError, match="dtype"):
            functional(nd)(x.to(any_device, dtype), w.to(any_device, dtype),
                           None if b is None else b.to(any_device, dtype), stride, dilation, groups)


def _module_samples():
    out = []
    for info in module_db:
        if info.module_cls not in (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d):
            continue
        nd = {torch.nn.Conv1d: 1, torch.nn.Conv2d: 2, torch.nn.Conv3d: 3}[info.module_cls]
        for i, s in enumerate(info.module_inputs_func(info, device="cpu", dtype=torch.float64,
                                                       requires_grad=True, training=True)):
            out.append(pytest.param(nd, s, id=f"Conv{nd}d-{i}"))
    assert len(out) >= 6, "PyTorch's conv ModuleInfos not found"
    return out


@pytest.mark.parametrize("nd,sample", _module_samples())
def test_module_sample(nd, sample, any_device):
    """nn.ConvNd's module samples built as FullConvNd (the padding argument dropped: the module
    always pads fully) against nn.ConvNd with the full padding and the same weights."""
    kwargs = {k: v for k, v in sample.constructor_input.kwargs.items() if k != "padding"}
    args = sample.constructor_input.args
    cls = {1: fullconv.FullConv1d, 2: fullconv.FullConv2d, 3: fullconv.FullConv3d}[nd]
    ref_cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[nd]
    mod = cls(*args, **kwargs, dtype=torch.float64, device=any_device)
    ref = ref_cls(*args, **kwargs, padding=tuple(d * (k - 1) for d, k in zip(mod.dilation, mod.kernel_size)),
                  dtype=torch.float64, device=any_device)
    ref.load_state_dict(mod.state_dict())
    (x,) = sample.forward_input.args
    x1 = x.detach().to(any_device).requires_grad_()
    x2 = x.detach().to(any_device).requires_grad_()
    y, y_ref = mod(x1), ref(x2)
    assert_close_scaled(y, y_ref, torch.float64, "module forward")
    gy = torch.randn_like(y_ref)
    got = torch.autograd.grad(y, [x1, mod.weight, mod.bias], gy)
    want = torch.autograd.grad(y_ref, [x2, ref.weight, ref.bias], gy)
    for name, g, r in zip(("input", "weight", "bias"), got, want):
        assert_close_scaled(g, r, torch.float64, f"module grad {name}")
    # and the functional reference agrees with the module reference (same padding rule)
    assert_close_scaled(F.__dict__[f"conv{nd}d"](x2.detach(), ref.weight, ref.bias, ref.stride, ref.padding,
                                                 ref.dilation, ref.groups), y_ref, torch.float64, "padding rule")
