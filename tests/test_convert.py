"""fullconv.convert on torchvision families and custom models."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fullconv
from fullconv import FullConvAlignmentError

tv = pytest.importorskip("torchvision")
from torchvision.models import video  # noqa: E402

FAMILIES_2D = ["resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn", "densenet121"]
FAMILIES_3D = ["r3d_18", "mc3_18", "r2plus1d_18"]


def build(name):
    torch.manual_seed(0)
    ctor = getattr(tv.models, name, None) or getattr(video, name)
    return ctor(num_classes=10)


def n_convs(model):
    return sum(isinstance(m, (nn.Conv2d, nn.Conv3d)) for m in model.modules())


def n_full(model):
    return sum(isinstance(m, (fullconv.FullConv2d, fullconv.FullConv3d)) for m in model.modules())


@pytest.mark.parametrize("name", FAMILIES_2D + FAMILIES_3D)
def test_family_converts_runs_and_keeps_state_dict(name):
    model = build(name)
    conv = fullconv.convert(model)
    assert conv is not model
    assert n_full(conv) == n_convs(model) and n_full(model) == 0
    sd = model.state_dict()
    assert list(conv.state_dict().keys()) == list(sd.keys())
    for k, v in conv.state_dict().items():
        assert torch.equal(v, sd[k]), k
    fresh = fullconv.convert(build(name))
    fresh.load_state_dict(sd)  # a pretrained state_dict loads into the converted model
    x = torch.randn(2, 3, 8, 24, 24) if name in FAMILIES_3D else torch.randn(2, 3, 40, 40)
    out = conv(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in conv.parameters() if p.requires_grad)


@pytest.mark.parametrize("name,expected", [("resnet18", 21), ("resnet50", 21)])
def test_resnet_final_map_matches_paper(name, expected):
    # The paper: F-Conv ResNet-18/50 at 224 end at 21x21 (instead of 7x7).
    model = fullconv.convert(build(name).to("meta"))
    seen = {}
    model.layer4.register_forward_hook(lambda m, i, o: seen.update(shape=tuple(o.shape)))
    model(torch.empty(1, 3, 224, 224, device="meta"))
    assert seen["shape"][-2:] == (expected, expected)
    kept = fullconv.convert(build(name).to("meta"), stem_pool="keep")
    assert isinstance(kept.maxpool, nn.MaxPool2d) and kept.maxpool.kernel_size == 3
    assert model.maxpool.kernel_size == 2 and model.maxpool.stride == 2


def test_authors_shortcut_paddings():
    r18 = fullconv.convert(build("resnet18"))
    assert r18.layer1[0].fullconv_shortcut_pad == (2, 2, 2, 2)  # BasicBlock identity
    assert r18.layer2[0].fullconv_shortcut_pad == (3, 3, 3, 3)  # pad 3 before the 1x1/2
    r50 = fullconv.convert(build("resnet50"))
    assert r50.layer1[0].fullconv_shortcut_pad == (1, 1, 1, 1)  # Bottleneck (with 1x1 downsample)
    assert r50.layer2[0].fullconv_shortcut_pad == (1, 1, 1, 1)
    assert r50.layer3[2].fullconv_shortcut_pad == (1, 1, 1, 1)


@pytest.mark.parametrize("block_name", ["basic", "basic_down", "bottleneck", "bottleneck_down"])
@pytest.mark.parametrize("size", [7, 8, 13, 14])
def test_block_alignment_odd_and_even_sizes(block_name, size):
    from torchvision.models.resnet import BasicBlock, Bottleneck
    torch.manual_seed(0)
    if block_name.startswith("basic"):
        stride = 2 if block_name.endswith("down") else 1
        down = nn.Sequential(nn.Conv2d(8, 16, 1, stride, bias=False), nn.BatchNorm2d(16)) if stride == 2 else None
        block = BasicBlock(8, 16 if down else 8, stride, down)
    else:
        stride = 2 if block_name.endswith("down") else 1
        down = nn.Sequential(nn.Conv2d(8, 16, 1, stride, bias=False), nn.BatchNorm2d(16))
        block = Bottleneck(8, 4, stride, down)
    conv = fullconv.convert(block).eval()
    with torch.no_grad():
        # sizes agree (the probe would also refuse a mismatch)
        y = conv(torch.randn(1, 8, size, size))
        main = [m for n, m in conv.named_modules() if isinstance(m, nn.Conv2d) and not n.startswith("downsample")]
        # kernel centres line up: with centre-tap-only kernels the main path moves an impulse
        # exactly where the padded shortcut puts it
        for m in conv.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
                m.weight[..., m.kernel_size[0] // 2, m.kernel_size[1] // 2] = 1.0
        pad = conv.fullconv_shortcut_pad[0]
        for pos in range(size):
            if (pos + pad) % stride:
                continue  # not sampled by the strided shortcut
            x = torch.zeros(1, 8, size, size)
            x[..., pos, size - 1 - pos] = 1.0
            out = x
            for i, m in enumerate(main):
                out = m(out)
            sc = F.pad(x, conv.fullconv_shortcut_pad)
            if conv.downsample is not None:
                sc = conv.downsample[0](sc)
            assert out.shape == sc.shape == y.shape[:1] + out.shape[1:2] + y.shape[2:]
            assert torch.equal(out.abs().sum(1) > 0, sc.abs().sum(1) > 0)


def test_dense_block_concatenation_is_padded():
    model = fullconv.convert(build("densenet121"))
    block = model.features.denseblock1
    assert type(block).__name__ == "FullDenseBlock"
    assert block.denselayer1.fullconv_carry_pad == (1, 1, 1, 1)


def test_shift_invariance_of_converted_stack():
    # a bias-free, BN-free converted stack is exactly shift-invariant under shifts by its
    # total stride inside a zero canvas; the same-padded original is not
    torch.manual_seed(0)
    stack = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, stride=2, padding=1, bias=False), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, stride=2, padding=1, bias=False), nn.ReLU()).double()
    full = fullconv.convert(stack)
    obj = torch.rand(1, 1, 6, 6, dtype=torch.float64) + 0.5

    def at(top, left):
        c = torch.zeros(1, 1, 40, 40, dtype=torch.float64)
        c[..., top:top + 6, left:left + 6] = obj
        return c

    with torch.no_grad():
        pooled = [full(at(t, l)).amax((-2, -1)) for t, l in ((0, 0), (4, 8), (12, 28), (32, 32))]
        for p in pooled[1:]:
            torch.testing.assert_close(p, pooled[0], rtol=1e-12, atol=1e-12)
        same = [stack(at(t, l)).amax((-2, -1)) for t, l in ((0, 0), (12, 12))]
        assert not torch.allclose(same[0], same[1])


class Unalignable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + x  # a residual the converter does not know


def test_unalignable_residual_raises_named_error():
    with pytest.raises(FullConvAlignmentError, match=r"'<model>'|Unalignable|\(1, 4, 66, 66\)"):
        fullconv.convert(nn.Sequential(nn.Conv2d(3, 4, 1), Unalignable()))
    with pytest.raises(FullConvAlignmentError, match=r"module '1'.*\(1, 4, 66, 66\) and \(1, 4, 64, 64\)"):
        fullconv.convert(nn.Sequential(nn.Conv2d(3, 4, 1), Unalignable()))
    # excluding the residual branch's conv makes it valid again
    ok = fullconv.convert(nn.Sequential(nn.Conv2d(3, 4, 1), Unalignable()), exclude="1.*")
    assert isinstance(ok[1].conv, nn.Conv2d) and not isinstance(ok[1].conv, fullconv.FullConv2d)


class CatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


def test_unalignable_concatenation_raises():
    with pytest.raises(FullConvAlignmentError, match="concatenation"):
        fullconv.convert(CatNet(), example_input=torch.zeros(1, 3, 16, 16))


def test_include_exclude_inplace_mode_dtype():
    model = build("resnet18").double().eval()
    out = fullconv.convert(model, include=["layer4.*"])
    assert isinstance(out.layer4[0].conv1, fullconv.FullConv2d)
    assert not isinstance(out.layer1[0].conv1, fullconv.FullConv2d)
    assert not isinstance(out.conv1, fullconv.FullConv2d) and out.maxpool.kernel_size == 3
    assert not out.training and out.layer4[0].conv1.weight.dtype == torch.float64
    out(torch.randn(1, 3, 32, 32, dtype=torch.float64))
    same = fullconv.convert(model, inplace=True, exclude=lambda name, m: name == "conv1")
    assert same is model and not isinstance(model.conv1, fullconv.FullConv2d)
    assert isinstance(model.layer1[0].conv1, fullconv.FullConv2d)


def test_padding_modes_left_alone_with_warning():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), nn.Conv2d(4, 4, 3, padding=1))
    with pytest.warns(UserWarning, match="circular"):
        out = fullconv.convert(model)
    assert not isinstance(out[0], fullconv.FullConv2d) and isinstance(out[1], fullconv.FullConv2d)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = fullconv.convert(model, convert_padding_modes=True)
    assert isinstance(out[0], fullconv.FullConv2d)


def test_convert_rejects_non_module():
    with pytest.raises(TypeError):
        fullconv.convert("resnet18")
    with pytest.raises(ValueError):
        fullconv.convert(nn.Conv2d(1, 1, 3), stem_pool="big")


def set_fused(model, fused):
    for m in model.modules():
        if hasattr(m, "fullconv_shortcut_pad"):
            m.fullconv_fused = fused


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "r3d_18"])
@pytest.mark.parametrize("train", [True, False])
def test_fused_epilogue_matches_unfused_path(name, train):
    model = fullconv.convert(build(name)).double()
    with torch.no_grad():  # non-trivial BatchNorm statistics for the eval-mode folding
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    model.train(train)
    shape = (1, 3, 3, 12, 12) if name == "r3d_18" else (2, 3, 17, 16)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    results = []
    for fused in (True, False):
        set_fused(model, fused)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        y = model(x)
        results.append((y, torch.autograd.grad(y.square().sum(), [x, *model.parameters()])))
        model.load_state_dict(state)  # undo the running-statistics update of train mode
    (y1, g1), (y2, g2) = results
    torch.testing.assert_close(y1, y2, rtol=1e-10, atol=1e-10)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_stem_pool_full_does_not_crop_the_border():
    # The authors' 2x2/2 stem pool drops the last row/column of an odd-sized stem output, so
    # content on the bottom/right image border is cropped; stem_pool="full" keeps it, and the
    # BN-free (eval, default statistics) converted ResNet-18 is then exactly shift-invariant.
    torch.manual_seed(0)
    authors = fullconv.convert(build("resnet18")).eval().double()
    full = fullconv.convert(build("resnet18"), stem_pool="full").eval().double()
    assert full.maxpool.ceil_mode and not authors.maxpool.ceil_mode
    p = torch.rand(1, 3, 28, 28, dtype=torch.float64)
    a = torch.zeros(1, 3, 60, 60, dtype=torch.float64)
    b = a.clone()
    a[..., :28, :28] = p
    b[..., 32:, 32:] = p  # touches the bottom-right edge; the stem output is 33x33 (odd)
    feats = lambda m, x: m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x)))))))).amax((-2, -1))
    with torch.no_grad():
        torch.testing.assert_close(feats(full, a), feats(full, b), rtol=1e-12, atol=1e-12)
        assert not torch.allclose(feats(authors, a), feats(authors, b))


# --- conversion in place: identities, modes, parametrizations, pickling, FX -----------------

def test_convert_keeps_each_modules_mode():
    # frozen BatchNorm inside a training model (and the reverse) survive the shape probe
    m = build("resnet18").train()
    for b in m.modules():
        if isinstance(b, nn.BatchNorm2d):
            b.eval()
    fm = fullconv.convert(m)
    assert fm.training
    assert all(not b.training for b in fm.modules() if isinstance(b, nn.BatchNorm2d))
    e = build("resnet18").eval()
    e.layer1[0].bn1.train()
    fe = fullconv.convert(e)
    assert not fe.training and fe.layer1[0].bn1.training


def test_fused_block_folds_only_eval_batchnorm():
    # a BatchNorm switched to training mode inside an eval model normalises with batch
    # statistics (and updates its running ones): the fused path must not fold it
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), tv.models.resnet.BasicBlock(8, 8))
    f = fullconv.convert(net).eval()
    f[1].bn2.train()
    x = torch.randn(2, 3, 16, 16)
    before = f[1].bn2.running_mean.clone()
    fused = f(x)
    assert not torch.equal(f[1].bn2.running_mean, before), "running statistics not updated"
    f[1].fullconv_fused = False
    f[1].bn2.running_mean.copy_(before)
    torch.testing.assert_close(fused, f(x))


def test_convert_keeps_parameters_sharing_and_hooks():
    conv = nn.Conv2d(3, 3, 3, padding=1)
    shared = nn.Sequential(conv, nn.ReLU(), conv)
    out = fullconv.convert(shared)
    assert out[0] is out[2] and len(list(out.parameters())) == 2
    a, b = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
    b.weight = a.weight
    tied = fullconv.convert(nn.Sequential(a, b))
    assert tied[0].weight is tied[1].weight
    # in place: the very Parameters an optimizer holds, the module's hooks
    m = build("resnet18")
    params = {id(p) for p in m.parameters()}
    calls = []
    m.conv1.register_forward_hook(lambda mod, args, out: calls.append(out.shape))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    fullconv.convert(m, inplace=True)
    assert isinstance(m.conv1, fullconv.FullConv2d) and {id(p) for p in m.parameters()} == params
    before = m.conv1.weight.detach().clone()
    m(torch.randn(2, 3, 64, 64)).sum().backward()
    opt.step()
    assert calls and calls[-1] == (2, 64, 35, 35) and not torch.equal(m.conv1.weight, before)
    # a bare convolution converted in place is that module
    c = nn.Conv2d(3, 4, 3, padding=1)
    assert fullconv.convert(c, inplace=True) is c and c.padding == (2, 2) and isinstance(c, fullconv.FullConv2d)


def test_convert_keeps_weight_norm_parametrization():
    torch.manual_seed(0)
    wn = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 4, 3, padding=1)))
    keys = sorted(wn.state_dict())
    out = fullconv.convert(wn)
    assert sorted(out.state_dict()) == keys and isinstance(out[0], fullconv.FullConv2d)
    x = torch.randn(1, 3, 8, 8)
    ref = F.conv2d(x, out[0].weight, out[0].bias, padding=2)
    torch.testing.assert_close(out(x), ref)
    # the parametrization still trains: a gradient reaches its original tensors
    out(x).sum().backward()
    assert out[0].parametrizations.weight.original1.grad is not None
    wn.load_state_dict(out.state_dict())


def test_converted_models_pickle(tmp_path):
    import pickle
    import subprocess
    import sys
    for name in ("resnet18", "densenet121"):
        m = fullconv.convert(build(name)).eval()
        x = torch.randn(1, 3, 64, 64)
        torch.testing.assert_close(pickle.loads(pickle.dumps(m))(x), m(x))
    # in a fresh process the aligned block classes are found by name
    path = tmp_path / "m.pt"
    torch.save(fullconv.convert(build("resnet18")), path)
    code = (f"import torch; m = torch.load({str(path)!r}, weights_only=False); "
            "print(type(m.layer1[0]).__name__, tuple(m(torch.randn(1, 3, 64, 64)).shape))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["FullBasicBlock", "(1,", "10)"]


def test_fx_traces_full_convolutions():
    from fullconv.convert import aligned_block_classes
    from torchvision.models.feature_extraction import create_feature_extractor
    seq = nn.Sequential(fullconv.FullConv2d(3, 4, 3), nn.ReLU())
    g = torch.fx.symbolic_trace(seq)
    assert torch.ops.fullconv.full_conv in [n.target for n in g.graph.nodes]
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(g(x), seq(x))
    m = fullconv.convert(build("resnet18")).eval()
    fe = create_feature_extractor(m, {"layer2": "l2"},
                                  tracer_kwargs={"leaf_modules": list(aligned_block_classes())})
    x = torch.randn(1, 3, 64, 64)
    ref = m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))
    torch.testing.assert_close(fe(x)["l2"], ref)


def test_probe_checks_elementwise_products():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return x * torch.sigmoid(self.c(x))

    with pytest.raises(FullConvAlignmentError, match=r"mul.*module '1'"):
        fullconv.convert(nn.Sequential(nn.Conv2d(3, 4, 1), Gate()))


def test_eval_fusion_keeps_hooks_and_hook_based_reparametrisations():
    """In eval mode a converted ResNet block folds BatchNorm into its last convolution; that
    path reads the modules' weights directly, so it must step aside where calling the modules
    would do more: forward hooks (which must fire, and may change outputs) and the old-style
    weight_norm, whose pre-forward hook recomputes the weight."""
    torch.manual_seed(0)
    m = fullconv.convert(build("resnet18")).eval()
    calls = []
    m.layer1[0].conv2.register_forward_hook(lambda *a: calls.append("conv2"))
    m.layer1[0].bn2.register_forward_hook(lambda mod, args, out: calls.append("bn2") or out * 2)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        hooked = m(x)
        assert calls == ["conv2", "bn2"]
        m.layer1[0].fullconv_fused = False
        torch.testing.assert_close(hooked, m(x))
    # old-style weight_norm: the weight follows weight_g / weight_v through a pre-forward hook
    ref = build("resnet18")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        nn.utils.weight_norm(ref.layer1[0].conv2)
    fm = fullconv.convert(ref, inplace=True).eval()
    with torch.no_grad():
        fm.layer1[0].conv2.weight_g.mul_(0.5)
        fused = fm(x)
        fm.layer1[0].fullconv_fused = False
        torch.testing.assert_close(fused, fm(x))
