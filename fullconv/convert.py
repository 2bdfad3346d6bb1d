"""``fullconv.convert(model)``: turn an existing CNN into a full-convolution network.

Every zero-padded ``nn.Conv1d/2d/3d`` becomes the matching ``FullConvNd`` in place (the same
module object: its Parameters, parametrizations and hooks stay, so state_dict keys and tensors
are unchanged and shared weights stay shared). Full convolutions grow each feature map by
``dilation*(k-1)``, which breaks the residual additions and concatenations of modern
networks; the known torchvision families are aligned here:

* ResNet ``BasicBlock`` / ``Bottleneck`` (resnet18-152, wide_resnet, resnext) and the video
  ResNets (r3d_18, mc3_18, r2plus1d_18): the shortcut is zero-padded symmetrically by the
  amount that makes its output the same size as the main path's *and* puts the kernel centres
  on the same input pixels (derived from the convolutions of the block: BasicBlock pad 2,
  downsample pad 3 before the stride-2 1x1, Bottleneck pad 1, as the paper's authors did);
* the ResNet stem max-pool: ``stem_pool="authors"`` uses their 2x2 stride-2 pool,
  ``"full"`` the same pool with ceil_mode (no row/column dropped at odd sizes),
  ``"keep"`` leaves torchvision's 3x3/2 pool;
* DenseNet dense blocks: the features carried along are zero-padded (centred) to the size of
  each new layer's output before the concatenation;
* VGG needs nothing beyond the conv conversion (its adaptive pool absorbs the larger map).

Any other model: after conversion a shape probe runs the model on fake tensors (no compute)
and an element-wise addition, subtraction, multiplication or division, or a concatenation,
of mismatched sizes raises ``FullConvAlignmentError`` naming the module and the two shapes.
(Where the probe input cannot run the model at all, a warning says so and asks for
``example_input``.)
"""
from __future__ import annotations

import contextlib
import copy
import fnmatch
import warnings
from fractions import Fraction
from typing import Callable, Iterable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .errors import FullConvError, FullConvTypeError
from .nn import FullConv1d, FullConv2d, FullConv3d, _FullConvMixin
from .ops import _f_pad_spec

__all__ = ["convert", "FullConvAlignmentError", "shortcut_padding"]

_FULL = {nn.Conv1d: FullConv1d, nn.Conv2d: FullConv2d, nn.Conv3d: FullConv3d}
Selector = Union[None, str, Sequence[str], Callable[[str, nn.Module], bool]]


class FullConvAlignmentError(FullConvError):
    """A residual addition or concatenation sees mismatched sizes after conversion."""


# --- geometry -------------------------------------------------------------------------------

def _conv_geometry(conv: nn.Module):
    nd = len(conv.kernel_size)
    return [(conv.kernel_size[i], conv.stride[i], conv.dilation[i], conv.padding[i]) for i in range(nd)]


def _centre_map(convs: Sequence[nn.Module], nd: int):
    """Per dim (scale, offset): the output position o of a conv chain is centred on input
    coordinate scale*o + offset (offset may be fractional for even kernels)."""
    maps = []
    for dim in range(nd):
        scale, offset = Fraction(1), Fraction(0)
        for conv in reversed(convs):  # compose from the last layer back to the input
            k, s, d, p = _conv_geometry(conv)[dim]
            # x_in = s * x_out - p + d*(k-1)/2
            offset = s * offset - p + Fraction(d * (k - 1), 2)
            scale = s * scale
        maps.append((scale, offset))
    return maps


def shortcut_padding(main_convs: Sequence[nn.Module], shortcut_convs: Sequence[nn.Module],
                     where: str = "block") -> tuple:
    """Symmetric zero padding (per spatial dim) to apply to a block's input before its
    shortcut so that shortcut and main path line up: same scale, same kernel centres.
    Raises FullConvAlignmentError when no such padding exists."""
    nd = len(main_convs[0].kernel_size)
    main = _centre_map(main_convs, nd)
    short = _centre_map(shortcut_convs, nd) if shortcut_convs else [(Fraction(1), Fraction(0))] * nd
    pads = []
    for dim, ((ms, mo), (ss, so)) in enumerate(zip(main, short)):
        pad = so - mo  # padding P shifts the shortcut's map by -P
        if ms != ss or pad.denominator != 1 or pad < 0:
            raise FullConvAlignmentError(
                f"{where}: cannot align the shortcut with the main path in spatial dim {dim} "
                f"(main path maps output o to input {ms}*o{mo:+}, shortcut to {ss}*o{so:+})")
        pads.append(int(pad))
    return tuple(pads)


def _convs_in(module: nn.Module, skip_prefix: Optional[str] = None):
    return [m for name, m in module.named_modules()
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
            and not (skip_prefix and (name == skip_prefix or name.startswith(skip_prefix + ".")))]


# --- aligned torchvision blocks -------------------------------------------------------------
# Converted blocks keep their class's attributes and parameters (the state_dict is unchanged);
# only forward changes, through a subclass assigned to __class__.

def _shortcut(block, x):
    """The block's shortcut branch. With a downsample, the padding goes before it (it is part
    of the downsample's input); the identity is returned unpadded and centred by the add."""
    if block.downsample is not None:
        spec = block.fullconv_shortcut_pad
        return block.downsample(F.pad(x, spec) if any(spec) else x)
    return x


def _fold_bn(conv, bn):
    """Weight and bias of conv followed by eval-mode BatchNorm, folded into one convolution."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = -bn.running_mean * scale
    if bn.bias is not None:
        bias = bias + bn.bias
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    return weight, bias


def _called_plainly(module, forward) -> bool:
    """Would calling the module only run `forward`? Not when a hook is registered on it (or on
    every module), which the fused path, reading its weights directly, would skip: forward and
    pre-forward hooks, including those through which old-style weight_norm, spectral_norm and
    pruning recompute the weight."""
    from torch.nn.modules import module as _m
    return (type(module).forward is forward and not module._forward_hooks and not module._forward_pre_hooks
            and not _m._global_forward_hooks and not _m._global_forward_pre_hooks)


def _can_fold(block, conv, bn):
    # (a BatchNorm in training mode inside an eval block normalises with batch statistics)
    return (not block.training and isinstance(conv, (FullConv1d, FullConv2d, FullConv3d))
            and isinstance(bn, nn.modules.batchnorm._BatchNorm) and not bn.training
            and bn.track_running_stats and bn.running_mean is not None
            and _called_plainly(conv, _FullConvMixin.forward)
            and _called_plainly(bn, nn.modules.batchnorm._BatchNorm.forward))


def _residual_output(block, h, x, conv=None, bn=None, main=None):
    """relu(bn(conv(h)) + centred shortcut(x)) (or relu(main + shortcut) when `main` is given).

    Fused: in eval mode with BatchNorm folded into the convolution, one op computes
    convolution + bias + padded residual + ReLU (full_conv_residual); otherwise the residual
    is added with its padding and the ReLU in one pass (padded_add). `fullconv_fused = False`
    on the block gives the unfused reference path (F.pad, add, ReLU), as the authors wrote it."""
    from .ops import full_conv_residual, padded_add

    shortcut = _shortcut(block, x)
    if not getattr(block, "fullconv_fused", True):
        out = main if main is not None else bn(conv(h))
        if shortcut.shape[2:] != out.shape[2:]:
            from .ops import centred_padding
            shortcut = F.pad(shortcut, _f_pad_spec(centred_padding(out.shape, shortcut.shape, out.dim() - 2)))
        return torch.relu(out + shortcut)
    if main is None and _can_fold(block, conv, bn):
        weight, bias = _fold_bn(conv, bn)
        return full_conv_residual(h, weight, bias, shortcut, conv.stride, conv.dilation, conv.groups,
                                  relu=True)
    out = main if main is not None else bn(conv(h))
    return padded_add(out, shortcut.to(out.dtype) if shortcut.dtype != out.dtype else shortcut, relu=True)


def _module_level(cls):
    """Registers a lazily built block class under its name in this module, so that converted
    models pickle (pickle finds classes by module and name; see __getattr__)."""
    cls.__module__ = __name__
    cls.__qualname__ = cls.__name__
    globals()[cls.__name__] = cls
    return cls


def __getattr__(name):
    # the aligned block classes (Full*) subclass torchvision's, so they are built on first use
    if name.startswith("Full"):
        _known_blocks()
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def aligned_block_classes() -> tuple:
    """The classes ``convert`` gives aligned torchvision blocks. Their forwards depend on
    tensor shapes, so torch.fx traces them as leaf modules, e.g.
    ``create_feature_extractor(m, nodes, tracer_kwargs={"leaf_modules": list(aligned_block_classes())})``."""
    return tuple(new for new, _ in _known_blocks().values())


def _resnet_block_classes():
    from torchvision.models import resnet as tv

    @_module_level
    class FullBasicBlock(tv.BasicBlock):
        def forward(self, x):
            h = self.relu(self.bn1(self.conv1(x)))
            return _residual_output(self, h, x, self.conv2, self.bn2)

    @_module_level
    class FullBottleneck(tv.Bottleneck):
        def forward(self, x):
            h = self.relu(self.bn1(self.conv1(x)))
            h = self.relu(self.bn2(self.conv2(h)))
            return _residual_output(self, h, x, self.conv3, self.bn3)

    return {tv.BasicBlock: FullBasicBlock, tv.Bottleneck: FullBottleneck}


def _video_block_classes():
    from torchvision.models.video import resnet as tvv

    @_module_level
    class FullVideoBasicBlock(tvv.BasicBlock):
        def forward(self, x):
            return _residual_output(self, None, x, main=self.conv2(self.conv1(x)))

    @_module_level
    class FullVideoBottleneck(tvv.Bottleneck):
        def forward(self, x):
            return _residual_output(self, None, x, main=self.conv3(self.conv2(self.conv1(x))))

    return {tvv.BasicBlock: FullVideoBasicBlock, tvv.Bottleneck: FullVideoBottleneck}


def _densenet_block_class():
    from torchvision.models import densenet as tvd

    @_module_level
    class FullDenseBlock(tvd._DenseBlock):
        def forward(self, init_features):
            features = [init_features]
            for layer in self.values():
                new_features = layer(features)
                spec = layer.fullconv_carry_pad
                if any(spec):
                    features = [F.pad(f, spec) for f in features]
                features.append(new_features)
            return torch.cat(features, 1)

    return tvd._DenseBlock, FullDenseBlock


_KNOWN = None


def _known_blocks():
    """{original class: (aligned class, kind)} for the torchvision families available (built
    once: a converted model's blocks keep one class per kind)."""
    global _KNOWN
    if _KNOWN is not None:
        return _KNOWN
    table = {}
    try:
        for orig, new in _resnet_block_classes().items():
            table[orig] = (new, "residual")
        for orig, new in _video_block_classes().items():
            table[orig] = (new, "residual")
        orig, new = _densenet_block_class()
        table[orig] = (new, "dense")
    except ImportError:  # torchvision not installed: only generic conversion
        pass
    _KNOWN = table
    return table


# --- conversion -----------------------------------------------------------------------------

def _selector(sel: Selector, default: bool):
    if sel is None:
        return lambda name, module: default
    if callable(sel):
        return sel
    if isinstance(sel, str):
        patterns = [sel]
    elif isinstance(sel, (list, tuple, set, frozenset)) and all(isinstance(p, str) for p in sel):
        patterns = list(sel)
    else:
        raise FullConvTypeError("include / exclude must be None, an fnmatch pattern, a sequence of patterns "
                                f"or a predicate f(name, module), got {sel!r}")
    return lambda name, module: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def convert(model: nn.Module, *, inplace: bool = False, include: Selector = None,
            exclude: Selector = None, stem_pool: str = "authors",
            convert_padding_modes: bool = False, example_input: Optional[torch.Tensor] = None,
            check: bool = True) -> nn.Module:
    """Return a full-convolution version of ``model``.

    Args:
        model: any nn.Module; torchvision ResNet/ResNeXt/Wide-ResNet, VGG, DenseNet and the
            video ResNets are aligned (see the module docstring).
        inplace: convert ``model`` itself instead of a deep copy.
        include / exclude: which convolutions to convert, by qualified module name
            (fnmatch patterns, e.g. ``"layer4.*"``) or a predicate ``f(name, module)``.
            Default: all convolutions with ``padding_mode='zeros'``.
        stem_pool: ``"authors"`` replaces a ResNet's 3x3/2 stem max-pool by the paper's 2x2/2
            pool; ``"full"`` by the same pool with ceil_mode, which never drops the last
            row/column of an odd-sized map (the authors' pool does, and so crops whatever lies
            on the bottom/right image border); ``"keep"`` leaves torchvision's pool.
        convert_padding_modes: also convert convolutions with a non-zero padding mode
            (reflect, circular, ...); by default they are left alone with a warning.
        example_input: input used by the shape probe; by default one is made from the first
            convolution (batch 1, 64 pixels per spatial dim, plus an odd size).
        check: run the shape probe (fake tensors: no compute).

    Returns the converted model, every module in its own train/eval mode, on the same device
    and dtype. State_dict keys and tensors are unchanged, so a pretrained state_dict loads
    into it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert expects an nn.Module, got {type(model).__name__}")
    if example_input is not None and not isinstance(example_input, torch.Tensor):
        raise FullConvTypeError(f"example_input must be a Tensor or None, got {type(example_input).__name__}")
    if stem_pool not in ("authors", "full", "keep"):
        raise FullConvError(f"stem_pool must be 'authors', 'full' or 'keep', got {stem_pool!r}")
    if not inplace:
        model = copy.deepcopy(model)
    want = _selector(include, True)
    skip = _selector(exclude, False)
    known = _known_blocks()
    skipped_modes = []

    def convert_conv(name, conv):
        base = type(conv).__mro__
        for cls, full_cls in _FULL.items():
            if cls in base:
                break
        else:
            return None
        if isinstance(conv, (FullConv1d, FullConv2d, FullConv3d)):
            return None
        if not want(name, conv) or skip(name, conv):
            return None
        if conv.padding_mode != "zeros":
            if not convert_padding_modes:
                skipped_modes.append(f"{name} ({conv.padding_mode})")
                return None
        # 'same' / 'valid' paddings are replaced by the full padding like any other. The module
        # itself is converted: its Parameters, parametrizations, hooks and any other references
        # to it (a module used twice, tied weights, an optimizer) stay as they are.
        return full_cls.convert_in_place(conv, convert_padding_mode=True)

    def visit(module, name):
        # convert the convolutions below `module`, then align `module` if it is a known block
        for child_name, child in list(module.named_children()):
            child_path = f"{name}.{child_name}" if name else child_name
            if isinstance(child, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                convert_conv(child_path, child)
            else:
                visit(child, child_path)
        entry = known.get(type(module))
        if entry is not None:
            _align_block(module, name or "<model>", *entry)

    if isinstance(model, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        converted = convert_conv("", model)
        return converted if converted is not None else model
    visit(model, "")
    if skipped_modes:
        warnings.warn("fullconv.convert left convolutions with a non-zero padding mode unchanged: "
                      + ", ".join(skipped_modes) + " (pass convert_padding_modes=True to convert them)",
                      stacklevel=2)
    if stem_pool != "keep":
        _authors_stem_pool(model, ceil_mode=stem_pool == "full")
    if check:
        probe_shapes(model, example_input)
    return model


def _is_full(conv):
    return isinstance(conv, (FullConv1d, FullConv2d, FullConv3d))


def _align_block(block, name, new_cls, kind):
    if kind == "residual":
        main = _convs_in(block, skip_prefix="downsample")
        short = _convs_in(block.downsample) if block.downsample is not None else []
        if not any(_is_full(c) for c in main + short):
            return  # nothing converted in this block
        block.fullconv_shortcut_pad = _f_pad_spec(shortcut_padding(main, short, name))
        block.__class__ = new_cls
    elif kind == "dense":
        for layer_name, layer in block.items():
            convs = _convs_in(layer)
            pads = shortcut_padding(convs, [], f"{name}.{layer_name}") if convs else ()
            layer.fullconv_carry_pad = _f_pad_spec(pads)
        block.__class__ = new_cls


def _authors_stem_pool(model, ceil_mode=False):
    try:
        from torchvision.models.resnet import ResNet
    except ImportError:
        return
    for module in model.modules():
        if isinstance(module, ResNet) and isinstance(module.maxpool, nn.MaxPool2d) and _is_full(module.conv1):
            module.maxpool = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode)


# --- shape probe ----------------------------------------------------------------------------

class _ModuleStack:
    def __init__(self, model):
        self.stack = []
        self.handles = []
        for name, m in model.named_modules():
            self.handles.append(m.register_forward_pre_hook(self._enter(name or "<model>")))
            self.handles.append(m.register_forward_hook(self._leave))

    def _enter(self, name):
        def hook(module, args):
            self.stack.append(name)
        return hook

    def _leave(self, module, args, output):
        self.stack.pop()

    def where(self):
        return self.stack[-1] if self.stack else "<model>"

    def close(self):
        for h in self.handles:
            h.remove()


# element-wise binary ops whose operands must broadcast (residual additions, gates, ...)
_ADD_OPS = {torch.add, torch.Tensor.add, torch.Tensor.add_, torch.Tensor.__add__,
            torch.Tensor.__iadd__, torch.Tensor.__radd__,
            torch.sub, torch.Tensor.sub, torch.Tensor.sub_, torch.Tensor.__sub__, torch.Tensor.__rsub__,
            torch.Tensor.__isub__,
            torch.mul, torch.Tensor.mul, torch.Tensor.mul_, torch.Tensor.__mul__, torch.Tensor.__rmul__,
            torch.Tensor.__imul__,
            torch.div, torch.Tensor.div, torch.Tensor.div_, torch.Tensor.__truediv__,
            torch.Tensor.__rtruediv__, torch.Tensor.__itruediv__}
_CAT_OPS = {torch.cat, torch.concat, torch.concatenate, torch.stack}


class _AlignmentMode(torch.overrides.TorchFunctionMode):
    """Checks that residual additions and concatenations see matching spatial sizes."""

    def __init__(self, modules: _ModuleStack):
        super().__init__()
        self.modules = modules

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _ADD_OPS and len(args) >= 2 and all(isinstance(a, torch.Tensor) for a in args[:2]):
            a, b = args[0], args[1]
            if a.dim() >= 3 and a.dim() == b.dim():
                try:
                    torch.broadcast_shapes(a.shape, b.shape)
                except RuntimeError:
                    raise FullConvAlignmentError(
                        f"after conversion, an element-wise {getattr(func, '__name__', 'operation')} in module "
                        f"'{self.modules.where()}' combines tensors of shapes {tuple(a.shape)} and "
                        f"{tuple(b.shape)}: align the branch (pad it symmetrically) or exclude its "
                        "convolutions from the conversion") from None
        elif func in _CAT_OPS:
            tensors = args[0] if args else kwargs.get("tensors")
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            tensors = list(tensors) if isinstance(tensors, (list, tuple)) else []
            if len(tensors) > 1 and all(isinstance(t, torch.Tensor) and t.dim() >= 3 for t in tensors):
                ref = tensors[0]
                for t in tensors[1:]:
                    d = dim % ref.dim()
                    if t.dim() != ref.dim() or any(x != y for i, (x, y) in enumerate(zip(ref.shape, t.shape)) if i != d):
                        raise FullConvAlignmentError(
                            f"after conversion, a concatenation in module '{self.modules.where()}' joins "
                            f"tensors of shapes {tuple(ref.shape)} and {tuple(t.shape)}: pad the "
                            "carried features to the new size or exclude the convolutions")
        return func(*args, **kwargs)


def _default_probe_inputs(model):
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))), None)
    if first is None:
        return []
    nd = len(first.kernel_size)
    p = next(iter(model.parameters()), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    device = p.device if p is not None else torch.device("cpu")
    sizes = {1: [(128,), (129,)], 2: [(64, 64), (65, 67)], 3: [(8, 56, 56), (9, 57, 59)]}[nd]
    return [torch.zeros(1, first.in_channels, *s, dtype=dtype, device=device) for s in sizes]


def probe_shapes(model: nn.Module, example_input: Optional[torch.Tensor] = None) -> None:
    """Runs ``model`` on fake tensors (shapes only, no compute) and raises
    FullConvAlignmentError if an addition or concatenation sees mismatched sizes."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    inputs = [example_input] if example_input is not None else _default_probe_inputs(model)
    modes = [(m, m.training) for m in model.modules()]  # each module's own mode, restored below
    model.eval()  # no running-statistics updates during the probe
    stack = _ModuleStack(model)
    try:
        for inp in inputs:
            with FakeTensorMode(allow_non_fake_inputs=True) as mode:
                fake = mode.from_tensor(inp)
                with _AlignmentMode(stack), torch.no_grad():
                    try:
                        model(fake)
                    except FullConvAlignmentError:
                        raise
                    except Exception as exc:  # the model cannot run on this probe input
                        if example_input is not None:
                            raise FullConvAlignmentError(
                                f"the converted model fails on the example input in module "
                                f"'{stack.where()}': {exc}") from exc
                        warnings.warn(f"fullconv.convert could not probe the converted model with an input "
                                      f"of shape {tuple(inp.shape)} ({type(exc).__name__}: {exc}); pass "
                                      "example_input= to check its residual alignment", stacklevel=3)
                        return
                    finally:
                        stack.stack.clear()
    finally:
        stack.close()
        for m, training in modes:
            m.training = training
