"""Pure-PyTorch reference of full convolution (materialises the padding; for tests and
benchmarks only)."""
import torch.nn.functional as F

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _ntuple(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def full_conv_reference(input, weight, bias=None, stride=1, dilation=1, groups=1):
    """``F.convNd(input, weight, bias, stride, padding=dilation*(k-1), dilation, groups)``."""
    nd = weight.dim() - 2
    dilation = _ntuple(dilation, nd)
    padding = tuple(d * (k - 1) for d, k in zip(dilation, weight.shape[2:]))
    return _CONV[nd](input, weight, bias, _ntuple(stride, nd), padding, dilation, groups)
