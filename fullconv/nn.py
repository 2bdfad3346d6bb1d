"""Drop-in full-convolution modules.

``FullConv1d/2d/3d`` subclass ``nn.Conv1d/2d/3d``: same parameters (in ``nn.ConvNd``'s order:
in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
device, dtype), initialisation and state_dict, so weights move freely between the two.
``padding`` is ``'full'`` (the default) or the full padding ``dilation * (kernel_size - 1)``
itself, which ``.padding`` reports (recomputed when ``kernel_size`` or ``dilation`` is
reassigned); other paddings and padding modes are refused.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .errors import FullConvError
from .ops import _tuple, full_conv1d, full_conv2d, full_conv3d

__all__ = ["FullConv1d", "FullConv2d", "FullConv3d"]


class _FullConvMixin:
    _nd: int
    _functional = None

    def _init_full(self, conv_cls, in_channels, out_channels, kernel_size, stride, padding, dilation,
                   groups, bias, padding_mode, device, dtype):
        if padding_mode != "zeros":
            raise FullConvError(
                f"{type(self).__name__} supports only padding_mode='zeros' (full convolution "
                f"zero-pads by definition), got padding_mode={padding_mode!r}")
        nd = self._nd
        kernel = _tuple(kernel_size, nd, "kernel_size")
        dil = _tuple(dilation, nd, "dilation")
        _tuple(stride, nd, "stride")
        if any(k <= 0 for k in kernel):
            raise FullConvError(f"kernel_size must be positive, got {kernel}")
        if any(d <= 0 for d in dil):
            raise FullConvError(f"dilation must be positive, got {dil}")
        full = tuple(d * (k - 1) for d, k in zip(dil, kernel))
        # nn.ConvNd's positional order, so that a call written for it means the same here; a
        # padding other than the full one is refused (the full one itself is accepted as is)
        no_padding = all(f == 0 for f in full)  # 1-tap kernels: 'valid' and 'same' are the full padding
        if not (isinstance(padding, str) and (padding == "full" or (no_padding and padding in ("valid", "same")))):
            given = padding if isinstance(padding, str) else _tuple(padding, nd, "padding")
            if given != full:
                raise FullConvError(
                    f"{type(self).__name__} always uses full padding dilation*(kernel_size-1) = {full}; "
                    f"leave padding at its default 'full' (got padding={padding!r})")
        conv_cls.__init__(self, in_channels, out_channels, kernel, stride=stride,
                          padding=full, dilation=dil, groups=groups, bias=bias,
                          padding_mode="zeros", device=device, dtype=dtype)
        if any(s <= 0 for s in self.stride):
            raise FullConvError(f"stride must be positive, got {self.stride}")

    # ``padding`` follows kernel_size and dilation (reassigning either after construction keeps
    # it the full padding); assigning it accepts only 'full' or the full padding itself.
    @property
    def padding(self) -> tuple:
        kernel = _tuple(self.kernel_size, self._nd, "kernel_size")
        dil = _tuple(self.dilation, self._nd, "dilation")
        return tuple(d * (k - 1) for d, k in zip(dil, kernel))

    @padding.setter
    def padding(self, value) -> None:
        if "dilation" not in self.__dict__ or "kernel_size" not in self.__dict__:
            return  # nn.ConvNd.__init__ sets padding before them (_init_full checked it)
        if isinstance(value, str) and value == "full":
            return
        full = self.padding
        given = value if isinstance(value, str) else _tuple(value, self._nd, "padding")
        if given != full:
            raise FullConvError(
                f"{type(self).__name__} always uses full padding dilation*(kernel_size-1) = {full}; "
                f"it cannot be set to {value!r} (it follows kernel_size and dilation)")

    def forward(self, input: Tensor) -> Tensor:
        return type(self)._functional(input, self.weight, self.bias, self.stride,
                                      self.dilation, self.groups)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != (1,) * self._nd:
            s += f", stride={self.stride}"
        if self.dilation != (1,) * self._nd:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s + ", padding=full"

    @classmethod
    def _check_convertible(cls, conv: nn.Module, convert_padding_mode: bool, what: str):
        base = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[cls._nd]
        if not isinstance(conv, base):
            raise TypeError(f"{cls.__name__}.{what} expects an nn.{base.__name__}, got "
                            f"{type(conv).__name__}")
        if getattr(conv, "transposed", False):
            raise TypeError(f"{cls.__name__}.{what} cannot convert a transposed convolution")
        if isinstance(conv, nn.modules.lazy.LazyModuleMixin) and conv.has_uninitialized_params():
            raise TypeError(f"{cls.__name__}.{what}: {type(conv).__name__} has uninitialized "
                            f"parameters; run a forward pass first")
        if conv.padding_mode != "zeros" and not convert_padding_mode:
            raise ValueError(f"{cls.__name__}.{what}: the convolution pads with "
                             f"padding_mode={conv.padding_mode!r}; full convolution pads with zeros "
                             f"(pass convert_padding_mode=True to convert it anyway)")

    @classmethod
    def convert_in_place(cls, conv: nn.Module, *, convert_padding_mode: bool = False) -> nn.Module:
        """Turns an existing ``nn.ConvNd`` itself into a full convolution and returns it: the
        same module object, Parameters, parametrizations (weight/spectral norm), hooks and
        state_dict; only its padding (now the full padding), padding mode and forward change.
        Weight sharing and optimizers holding its Parameters keep working."""
        cls._check_convertible(conv, convert_padding_mode, "convert_in_place")
        pads = tuple(d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size))
        conv.padding = pads
        conv.padding_mode = "zeros"
        conv._reversed_padding_repeated_twice = [p for p in reversed(pads) for _ in range(2)]
        conv.__class__ = _parametrized_class(cls, type(conv)) if parametrize.is_parametrized(conv) else cls
        conv.__dict__.pop("padding", None)  # the class's property reports it from now on
        return conv

    @classmethod
    def from_conv(cls, conv: nn.Module, *, convert_padding_mode: bool = False):
        """Builds a full convolution with the weights, stride, dilation, groups and bias of an
        existing ``nn.ConvNd`` (its padding is replaced by the full padding). The parameters
        are shared copies (new Parameters with the same values), on the same device/dtype.
        A convolution with a ``padding_mode`` other than ``'zeros'`` is refused unless
        ``convert_padding_mode=True`` (the result pads with zeros, as full convolution does)."""
        cls._check_convertible(conv, convert_padding_mode, "from_conv")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                  dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                  device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(conv.weight)
            new.weight.requires_grad_(conv.weight.requires_grad)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
                new.bias.requires_grad_(conv.bias.requires_grad)
        new.train(conv.training)
        return new


_PARAMETRIZED = {}


def _parametrized_class(full_cls, parametrized_cls):
    """A full convolution class for a parametrized convolution (torch.nn.utils.parametrize
    gives such modules a class of their own that carries the parametrized attributes): the
    full convolution's forward first, then the parametrized class for everything else."""
    key = (full_cls, parametrized_cls)
    if key not in _PARAMETRIZED:
        _PARAMETRIZED[key] = type(f"Parametrized{full_cls.__name__}", (full_cls, parametrized_cls), {})
    return _PARAMETRIZED[key]


class FullConv1d(_FullConvMixin, nn.Conv1d):
    """1-D full convolution; ``nn.Conv1d`` with ``padding = dilation*(kernel_size-1)``."""
    _nd = 1
    _functional = staticmethod(full_conv1d)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding="full", dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        self._init_full(nn.Conv1d, in_channels, out_channels, kernel_size, stride, padding, dilation,
                        groups, bias, padding_mode, device, dtype)


class FullConv2d(_FullConvMixin, nn.Conv2d):
    """2-D full convolution; ``nn.Conv2d`` with ``padding = dilation*(kernel_size-1)``."""
    _nd = 2
    _functional = staticmethod(full_conv2d)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding="full", dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        self._init_full(nn.Conv2d, in_channels, out_channels, kernel_size, stride, padding, dilation,
                        groups, bias, padding_mode, device, dtype)


class FullConv3d(_FullConvMixin, nn.Conv3d):
    """3-D full convolution; ``nn.Conv3d`` with ``padding = dilation*(kernel_size-1)``."""
    _nd = 3
    _functional = staticmethod(full_conv3d)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding="full", dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        self._init_full(nn.Conv3d, in_channels, out_channels, kernel_size, stride, padding, dilation,
                        groups, bias, padding_mode, device, dtype)
