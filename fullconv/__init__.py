"""fullconv: full convolution (F-Conv) for PyTorch.

Full convolution zero-pads every side by ``dilation * (kernel_size - 1)``, so every input
element meets every filter tap (Kayhan & van Gemert, CVPR 2020). This package provides
hand-written C++/CUDA kernels registered as ``torch.ops.fullconv.*`` custom operators, a
functional API, drop-in ``FullConvNd`` modules and a model converter.
"""
import torch  # noqa: F401  (the operator library links against torch)

try:
    from . import _C  # noqa: F401  (registers torch.ops.fullconv.*)
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "fullconv's compiled operator library (fullconv._C) could not be loaded: "
        f"{exc}. Build it with `pip install --no-build-isolation -e .` in the repository "
        "root, against the torch version you run."
    ) from exc

from .errors import FullConvError, FullConvTypeError  # noqa: E402
from .ops import full_conv1d, full_conv2d, full_conv3d, full_conv_residual, full_output_size, padded_add  # noqa: E402
from .nn import FullConv1d, FullConv2d, FullConv3d  # noqa: E402

__all__ = [
    "FullConvError",
    "FullConvTypeError",
    "full_conv1d",
    "full_conv2d",
    "full_conv3d",
    "full_output_size",
    "full_conv_residual",
    "padded_add",
    "FullConv1d",
    "FullConv2d",
    "FullConv3d",
]
__version__ = "0.1.0"

from .convert import FullConvAlignmentError, aligned_block_classes, convert  # noqa: E402

__all__ += ["convert", "FullConvAlignmentError", "aligned_block_classes"]
