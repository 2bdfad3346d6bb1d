"""Functional API, fake (meta) kernels and autograd of the ``fullconv`` operators.

The schemas live in C++ (``csrc/ops.cpp``):

* ``fullconv::full_conv(input, weight, bias, stride, dilation, groups) -> Tensor``
* ``fullconv::full_conv_backward(grad_output, input, weight, stride, dilation, groups,
  output_mask) -> (grad_input, grad_weight, grad_bias)``; gradients not requested by
  ``output_mask`` come back as empty tensors of shape ``[0]``.

Padding is always ``dilation * (kernel_size - 1)`` per side and never materialised.
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Union

import torch
import torch._prims_common as _prims_common
from torch import Tensor

from .errors import FullConvError, FullConvTypeError

IntOrTuple = Union[int, Sequence[int]]

_SUPPORTED_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


# --- shape math (mirrors csrc/conv_shape.h; the fake kernels use it) ------------------------

def full_output_size(size: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Output length of a full convolution along one dim: ``(L + d(k-1) - 1) // s + 1``."""
    for name, v in (("size", size), ("kernel_size", kernel_size), ("stride", stride), ("dilation", dilation)):
        if isinstance(v, torch.SymInt) or (isinstance(v, int) and not isinstance(v, bool)):
            continue  # checked first: some torch.compile versions cannot trace hasattr on a SymInt
        if isinstance(v, (bool, float)) or not hasattr(v, "__index__"):
            raise FullConvTypeError(f"full_output_size: {name} must be an int, got {v!r}")
    if size < 0 or kernel_size <= 0 or stride <= 0 or dilation <= 0:
        raise FullConvError(f"full_output_size: needs size >= 0 and positive kernel_size, stride and "
                            f"dilation, got size={size}, kernel_size={kernel_size}, stride={stride}, "
                            f"dilation={dilation}")
    return (size + dilation * (kernel_size - 1) - 1) // stride + 1


def _check_int64(v: int, name: str) -> None:
    if not -(2 ** 63) <= v < 2 ** 63:
        raise FullConvError(f"{name} {v} does not fit a 64-bit integer")


def _scalar_int(value):
    """A 0-d integer tensor as the int it holds (F.convNd accepts them for stride, dilation
    and groups); anything else unchanged."""
    if (isinstance(value, Tensor) and value.dim() == 0 and not value.is_floating_point()
            and not value.is_complex() and value.dtype != torch.bool):
        return int(value.item())
    return value


def _tuple(value, n: int, name: str) -> tuple:
    """Normalises an int or a length-n sequence of ints, as F.convNd accepts them."""
    if type(value) is int and -(2 ** 63) <= value < 2 ** 63:  # the common cases first
        return (value,) * n
    if type(value) is tuple and len(value) == n and all(type(v) is int and -(2 ** 63) <= v < 2 ** 63 for v in value):
        return value
    value = _scalar_int(value)
    if isinstance(value, (tuple, list)):
        value = tuple(_scalar_int(v) for v in value)
    if isinstance(value, bool):
        raise FullConvTypeError(f"{name} must be an int or a tuple of {n} ints, got a bool")
    if isinstance(value, numbers.Integral):
        _check_int64(int(value), name)
        return (int(value),) * n
    if isinstance(value, (tuple, list, torch.Size)):
        if len(value) == 1 and n > 1:
            value = tuple(value) * n
        if len(value) != n:
            raise FullConvError(f"{name} must be an int or a tuple of {n} ints for a {n}-D "
                                f"convolution, got {tuple(value)}")
        out = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (numbers.Integral, torch.SymInt)):
                raise FullConvTypeError(f"{name} entries must be ints, got {tuple(value)}")
            if isinstance(v, numbers.Integral):
                _check_int64(int(v), name)
            out.append(int(v) if isinstance(v, numbers.Integral) else v)
        return tuple(out)
    raise FullConvTypeError(f"{name} must be an int or a tuple of {n} ints, got "
                            f"{type(value).__name__}")


def _autocast_on(t: Tensor) -> bool:
    """Whether the op's autocast kernels (CPU and CUDA) will see `t`."""
    device_type = t.device.type
    return device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type)


def _autocast_dtype(t: Tensor):
    """The dtype `t` has once autocast has cast it for a convolution (the op's autocast
    kernels cast floating tensors other than float64 to the autocast dtype), else its own."""
    if t.is_floating_point() and t.dtype != torch.float64 and _autocast_on(t):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype


def _check_supported_dtype(dtype, op_name: str) -> None:
    if dtype not in _SUPPORTED_DTYPES:
        raise FullConvTypeError(f"{op_name}: unsupported dtype {dtype} (supported: "
                                "float64, float32, float16, bfloat16)")


def check_arguments(input, weight, bias, stride, dilation, groups, op_name="full_conv",
                    autocast=False):
    """Validates full_conv's arguments (mirrors the C++ checks) and returns
    ``(batched, output_shape)``. Raises FullConvError / FullConvTypeError. ``autocast``: compare
    dtypes as the op's autocast kernel will see them (the functional API's calls)."""
    if not isinstance(input, Tensor):
        raise FullConvTypeError(f"{op_name}: input must be a Tensor, got {type(input).__name__}")
    if not isinstance(weight, Tensor):
        raise FullConvTypeError(f"{op_name}: weight must be a Tensor, got {type(weight).__name__}")
    if bias is not None and not isinstance(bias, Tensor):
        raise FullConvTypeError(f"{op_name}: bias must be a Tensor or None, got {type(bias).__name__}")
    for name, t in (("input", input), ("weight", weight), ("bias", bias)):
        if t is not None and t.is_nested:
            raise FullConvTypeError(f"{op_name}: {name} is a nested tensor; nested tensors are not "
                                    "supported (convolve each component tensor)")
    wdim = weight.dim()
    if wdim not in (3, 4, 5):
        raise FullConvError(f"{op_name}: weight must have 3, 4 or 5 dims (out_channels, "
                            f"in_channels/groups, *kernel_size), got shape {tuple(weight.shape)}")
    nd = wdim - 2
    batched = input.dim() == wdim
    if not batched and input.dim() != wdim - 1:
        raise FullConvError(f"{op_name}: expected {wdim - 1}-D (unbatched) or {wdim}-D (batched) "
                            f"input for a {nd}-D weight of shape {tuple(weight.shape)}, got input "
                            f"of shape {tuple(input.shape)}")
    dtype_of = _autocast_dtype if autocast else (lambda t: t.dtype)
    if input.dtype != weight.dtype and dtype_of(input) != dtype_of(weight):
        raise FullConvTypeError(f"{op_name}: input and weight must have the same dtype, got "
                                f"{input.dtype} and {weight.dtype}")
    _check_supported_dtype(input.dtype, op_name)
    if input.device != weight.device:
        raise FullConvError(f"{op_name}: input and weight must be on the same device, got "
                            f"{input.device} and {weight.device}")
    if len(stride) != nd:
        raise FullConvError(f"{op_name}: stride must have {nd} entries, got {tuple(stride)}")
    if len(dilation) != nd:
        raise FullConvError(f"{op_name}: dilation must have {nd} entries, got {tuple(dilation)}")
    if any(s <= 0 for s in stride):
        raise FullConvError(f"{op_name}: stride must be positive, got {tuple(stride)}")
    if any(d <= 0 for d in dilation):
        raise FullConvError(f"{op_name}: dilation must be positive, got {tuple(dilation)}")
    if isinstance(groups, bool) or not isinstance(groups, (numbers.Integral, torch.SymInt)):
        raise FullConvTypeError(f"{op_name}: groups must be an int, got {type(groups).__name__}")
    if groups <= 0:
        raise FullConvError(f"{op_name}: groups must be positive, got {groups}")
    out_channels = weight.shape[0]
    in_channels = input.shape[1 if batched else 0]
    if out_channels <= 0:
        raise FullConvError(f"{op_name}: weight must have at least one output channel, got "
                            f"shape {tuple(weight.shape)}")
    if out_channels % groups != 0:
        raise FullConvError(f"{op_name}: out_channels ({out_channels}) must be divisible by "
                            f"groups ({groups})")
    if weight.shape[1] * groups != in_channels:
        raise FullConvError(f"{op_name}: input has {in_channels} channels but weight of shape "
                            f"{tuple(weight.shape)} with groups={groups} expects "
                            f"{weight.shape[1] * groups}")
    kernel = tuple(weight.shape[2:])
    spatial = tuple(input.shape[-nd:])
    if any(k <= 0 for k in kernel):
        raise FullConvError(f"{op_name}: kernel size must be positive in every dim, got weight "
                            f"of shape {tuple(weight.shape)}")
    if any(L <= 0 for L in spatial):
        # as F.convNd: an empty spatial dim only in a zero-batch input, and there the padded
        # extent must still hold the dilated kernel (kernel size > 1 along that dim)
        if not batched or input.shape[0] != 0:
            raise FullConvError(f"{op_name}: only zero batch or zero channel inputs may be empty, "
                                f"got input of shape {tuple(input.shape)}")
        if any(L <= 0 and k == 1 for L, k in zip(spatial, kernel)):
            raise FullConvError(f"{op_name}: an empty spatial dim with kernel size 1 leaves no output "
                                f"position (input {tuple(input.shape)}, weight {tuple(weight.shape)})")
    for L, k, d in zip(spatial, kernel, dilation):  # mirrors the C++ bound on the padded extent
        if all(isinstance(v, int) for v in (L, k, d)) and k > 1 and d > (2 ** 62 - L) // (2 * (k - 1)):
            raise FullConvError(f"{op_name}: dilation {tuple(dilation)} with a kernel of shape "
                                f"{tuple(weight.shape)} pads the input beyond the 64-bit index range")
    if bias is not None:
        if bias.dim() != 1 or bias.shape[0] != out_channels:
            raise FullConvError(f"{op_name}: bias must be 1-D with out_channels ({out_channels}) "
                                f"elements, got shape {tuple(bias.shape)}")
        if bias.dtype != input.dtype and dtype_of(bias) != dtype_of(input):
            raise FullConvTypeError(f"{op_name}: bias must have the dtype of input and weight "
                                    f"({input.dtype}), got {bias.dtype}")
        if bias.device != input.device:
            raise FullConvError(f"{op_name}: bias must be on the device of input and weight "
                                f"({input.device}), got {bias.device}")
    out_spatial = [full_output_size(L, k, s, d)
                   for L, k, s, d in zip(spatial, kernel, stride, dilation)]
    shape = ([input.shape[0]] if batched else []) + [out_channels] + out_spatial
    if all(isinstance(v, int) for v in shape):  # (not for symbolic shapes)
        nbytes = input.element_size()
        for v in shape:
            nbytes *= v
        if nbytes >= 2 ** 63:
            raise FullConvError(f"{op_name}: the output of a {tuple(input.shape)} input and a "
                                f"{tuple(weight.shape)} weight with dilation {tuple(dilation)} has more "
                                f"bytes than a 64-bit size can count")
    return batched, shape


def _output_memory_format(input: Tensor, weight: Tensor) -> torch.memory_format:
    """Mirrors output_memory_format() in csrc/ops.cpp (and F.convNd): channels-last output
    when the input or the weight is channels-last."""
    if input.dim() != weight.dim():  # unbatched: the output has no channels-last format
        return torch.contiguous_format
    if weight.dim() == 4:
        cl = torch.channels_last
    elif weight.dim() == 5:
        cl = torch.channels_last_3d
    else:
        return torch.contiguous_format
    input_cl = _suggest_memory_format(input) == cl
    return cl if input_cl or _suggest_memory_format(weight) == cl else torch.contiguous_format


def _suggest_memory_format(t: Tensor) -> torch.memory_format:
    # The stride heuristic of at::Tensor::suggest_memory_format, which the C++ kernels use.
    return _prims_common.suggest_memory_format(t)


# --- fake kernels ---------------------------------------------------------------------------

@torch.library.register_fake("fullconv::full_conv")
def _full_conv_fake(input, weight, bias, stride, dilation, groups):
    _, shape = check_arguments(input, weight, bias, stride, dilation, groups)
    return input.new_empty(shape).contiguous(memory_format=_output_memory_format(input, weight))


@torch.library.register_fake("fullconv::full_conv_backward")
def _full_conv_backward_fake(grad_output, input, weight, stride, dilation, groups, output_mask):
    _, shape = check_arguments(input, weight, None, stride, dilation, groups, "full_conv_backward")
    # mirrors check_grad_output() in csrc/ops.cpp
    if list(grad_output.shape) != list(shape):
        raise FullConvError(f"full_conv_backward: grad_output must have the output's shape "
                            f"{list(shape)}, got {list(grad_output.shape)}")
    if grad_output.dtype != input.dtype:
        raise FullConvTypeError(f"full_conv_backward: grad_output must have dtype {input.dtype}, "
                                f"got {grad_output.dtype}")
    if grad_output.device != input.device:
        raise FullConvError(f"full_conv_backward: grad_output must be on {input.device}, got "
                            f"{grad_output.device}")
    grad_input = (torch.empty_like(input, memory_format=_suggest_memory_format(input))
                  if output_mask[0] else input.new_empty((0,)))
    grad_weight = (torch.empty_like(weight, memory_format=_suggest_memory_format(weight))
                   if output_mask[1] else input.new_empty((0,)))
    grad_bias = input.new_empty((weight.shape[0],)) if output_mask[2] else input.new_empty((0,))
    return grad_input, grad_weight, grad_bias


# --- autograd -------------------------------------------------------------------------------

def _full_conv_setup_context(ctx, inputs, output):
    input, weight, bias, stride, dilation, groups = inputs
    ctx.save_for_backward(input, weight)
    ctx.conv_args = (stride, dilation, groups)
    ctx.has_bias = bias is not None


def _full_conv_backward(ctx, grad_output):
    input, weight = ctx.saved_tensors
    stride, dilation, groups = ctx.conv_args
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
            ctx.has_bias and ctx.needs_input_grad[2]]
    grads = _conv_bwd_call()(grad_output, input, weight, stride, dilation, groups, mask)
    return (*(g if m else None for g, m in zip(grads, mask)), None, None, None)


# full_conv's eager autograd formula is the C++ one (csrc/autograd.cpp: the Python formula's
# interpreter time was most of a small layer's forward and backward); the two functions above
# serve the torch.func Function below, with the same operators. The CPU backward kernel itself
# gives grad_weight the padded reference's NaN where a non-finite grad_output element meets
# padding (apply_nonfinite_grad_output_padding, csrc/ops.cpp).


def _bias_view(b: Tensor, like: Tensor, weight: Tensor) -> Tensor:
    """A per-channel vector shaped to broadcast over `like`, an output (batched or not)."""
    batched = like.dim() == weight.dim()
    return b.view(-1, *([1] * (like.dim() - (2 if batched else 1))))


def _conv_tangent(conv, input, weight, t_input, t_weight, t_bias, stride, dilation, groups, out_shape):
    """The tangent of full_conv from linearity: conv(dx, w) + conv(x, dw) + db."""
    out = torch.zeros(out_shape, dtype=input.dtype, device=input.device)
    if t_input is not None:
        out = out + conv(t_input.to(input.dtype), weight, None, stride, dilation, groups)
    if t_weight is not None:
        out = out + conv(input, t_weight.to(weight.dtype), None, stride, dilation, groups)
    if t_bias is not None:
        out = out + _bias_view(t_bias, out, weight)
    return out


def _backward_setup_context(ctx, inputs, output):
    grad_output, input, weight, stride, dilation, groups, output_mask = inputs
    ctx.save_for_backward(grad_output, input, weight)
    ctx.conv_args = (stride, dilation, groups)
    ctx.output_mask = output_mask


def _backward_backward(ctx, gg_input, gg_weight, gg_bias):
    """Gradients of (grad_input, grad_weight, grad_bias) = full_conv_backward(gy, x, w).

    grad_input is linear in gy (the adjoint of x -> full_conv(x, w)) and in w; grad_weight is
    linear in gy and in x; grad_bias sums gy. Each adjoint is again a full convolution or its
    backward, so higher derivatives come for free.
    """
    grad_output, input, weight = ctx.saved_tensors
    stride, dilation, groups = ctx.conv_args
    mask = ctx.output_mask
    need_gy, need_x, need_w = ctx.needs_input_grad[:3]
    use_gi = mask[0] and gg_input is not None
    use_gw = mask[1] and gg_weight is not None
    use_gb = mask[2] and gg_bias is not None
    g_gy = g_x = g_w = None
    conv, conv_bwd = _conv_call(), _conv_bwd_call()
    if need_gy:
        g_gy = torch.zeros_like(grad_output)
        if use_gi:
            g_gy = g_gy + conv(gg_input, weight, None, stride, dilation, groups)
        if use_gw:
            g_gy = g_gy + conv(input, gg_weight, None, stride, dilation, groups)
        if use_gb:
            g_gy = g_gy + _bias_view(gg_bias, grad_output, weight)
    if need_x and use_gw:
        g_x = conv_bwd(grad_output, input, gg_weight, stride, dilation, groups,
                       [True, False, False])[0]
    if need_w and use_gi:
        g_w = conv_bwd(grad_output, gg_input, weight, stride, dilation, groups,
                       [False, True, False])[1]
    return g_gy, g_x, g_w, None, None, None, None


torch.library.register_autograd("fullconv::full_conv_backward", _backward_backward,
                                setup_context=_backward_setup_context)


# --- vmap -----------------------------------------------------------------------------------
# Batching rules, so that torch.func.vmap (per-sample gradients, Jacobians, gradcheck's batched
# gradients) runs one kernel call instead of PyTorch's per-sample loop. Activations batched
# over a shared weight fold the vmapped dim into the batch; a batched weight (or, in the
# backward, a weight gradient per vmapped sample) folds it into the groups: B problems of
# `groups` groups are one problem of B*groups groups.

def _front(t: Tensor, bdim, size: int) -> Tensor:
    """t with its vmapped dim first (expanded where t is not vmapped)."""
    return t.movedim(bdim, 0) if bdim is not None else t.unsqueeze(0).expand(size, *t.shape)


def _fold_groups(x: Tensor, channel_dim: int) -> Tensor:
    """(B, N, C, *S) -> (N, B*C, *S): the vmapped problems side by side as groups."""
    x = x.movedim(0, channel_dim - 1)
    return x.flatten(channel_dim - 1, channel_dim)


def _unfold_groups(y: Tensor, size: int) -> Tensor:
    """(N, B*C, *S) -> (B, N, C, *S)."""
    return y.unflatten(1, (size, -1)).movedim(1, 0)


def _sample_on_meta(t: Optional[Tensor], bdim):
    """One sample of t (its vmapped dim dropped) as a meta tensor: per-sample shapes where
    there are no samples."""
    if t is None:
        return None
    shape = t.movedim(bdim, 0).shape[1:] if bdim is not None else t.shape
    return torch.empty(shape, dtype=t.dtype, device="meta")


def _no_samples(op, args, in_dims, like: Tensor):
    """A vmap over zero samples: empty results of the per-sample shapes (from the meta kernels)."""
    outs = op(*[_sample_on_meta(a, d) if isinstance(a, Tensor) else a for a, d in zip(args, in_dims)])
    single = isinstance(outs, Tensor)
    outs = (outs,) if single else tuple(outs)
    res = tuple(like.new_empty((0, *o.shape)) for o in outs)
    return (res[0], 0) if single else (res, tuple(0 for _ in res))


def _full_conv_vmap(info, in_dims, input, weight, bias, stride, dilation, groups):
    B = info.batch_size
    x_dim, w_dim, b_dim = in_dims[:3]
    op = torch.ops.fullconv.full_conv
    if B == 0:
        return _no_samples(op, (input, weight, bias, stride, dilation, groups), in_dims, input)
    nd = weight.dim() - (1 if w_dim is not None else 0) - 2
    x = _front(input, x_dim, B)
    unbatched = x.dim() - 1 == nd + 1
    if unbatched:  # each sample a (C, *S) input: a batch of one
        x = x.unsqueeze(1)
    if w_dim is None and b_dim is None:
        y = op(x.flatten(0, 1), weight, bias, stride, dilation, groups)
        y = y.unflatten(0, (B, -1))
    else:
        w = _front(weight, w_dim, B)
        b = None if bias is None else _front(bias, b_dim, B).flatten(0, 1)
        y = op(_fold_groups(x, 2), w.flatten(0, 1), b, stride, dilation, groups * B)
        y = _unfold_groups(y, B)
    return (y.squeeze(1) if unbatched else y), 0


def _full_conv_backward_vmap(info, in_dims, grad_output, input, weight, stride, dilation, groups, output_mask):
    B = info.batch_size
    gy_dim, x_dim, w_dim = in_dims[:3]
    op = torch.ops.fullconv.full_conv_backward
    if B == 0:
        outs, _ = _no_samples(op, (grad_output, input, weight, stride, dilation, groups, output_mask), in_dims,
                              input)
        return (tuple(o if m else input.new_empty((0,)) for o, m in zip(outs, output_mask)),
                tuple(0 if m else None for m in output_mask))
    nd = weight.dim() - (1 if w_dim is not None else 0) - 2
    gy, x = _front(grad_output, gy_dim, B), _front(input, x_dim, B)
    unbatched = x.dim() - 1 == nd + 1
    if unbatched:
        gy, x = gy.unsqueeze(1), x.unsqueeze(1)
    empty = x.new_empty((0,))
    if w_dim is None and not output_mask[1] and not output_mask[2]:
        # only grad_input: the vmapped dim is more batch
        gi = op(gy.flatten(0, 1), x.flatten(0, 1), weight, stride, dilation, groups, output_mask)[0]
        gi = gi.unflatten(0, (B, -1)) if output_mask[0] else None
        gw = gb = None
    else:
        w = _front(weight, w_dim, B)
        gi, gw, gb = op(_fold_groups(gy, 2), _fold_groups(x, 2), w.flatten(0, 1), stride, dilation,
                        groups * B, output_mask)
        gi = _unfold_groups(gi, B) if output_mask[0] else None
        gw = gw.unflatten(0, (B, -1)) if output_mask[1] else None
        gb = gb.unflatten(0, (B, -1)) if output_mask[2] else None
    if gi is not None and unbatched:
        gi = gi.squeeze(1)
    outs = (gi, gw, gb)
    return (tuple(empty if g is None else g for g in outs), tuple(None if g is None else 0 for g in outs))


torch.library.register_vmap("fullconv::full_conv", _full_conv_vmap)
torch.library.register_vmap("fullconv::full_conv_backward", _full_conv_backward_vmap)


# --- torch.func -----------------------------------------------------------------------------
# The operators' autograd formulas (C++, csrc/autograd.cpp; full_conv_backward's double
# backward above, in Python) serve eager autograd and torch.compile; torch.func's transforms
# (grad, vjp, jacrev, jacfwd, hessian, functional_call) need autograd.Functions with
# setup_context. Under a transform the functional API and the backward
# formulas go through these two, which call the same operators with the same formulas (vmap
# through the operators' batching rules above, jvp from linearity).

def _functorch_active() -> bool:
    """Inside a grad, jvp or vmap transform, and not under functionalize (which has no rule
    for autograd.Functions but runs the operators as they are) nor compiling (Dynamo reports an
    interpreter while tracing; a compiled graph records the operators, whose registered
    formulas it differentiates itself)."""
    if torch.compiler.is_compiling():
        return False
    stack = torch._C._functorch.get_interpreter_stack()
    if not stack:
        return False
    kinds = {i.key() for i in stack}
    T = torch._C._functorch.TransformType
    return T.Functionalize not in kinds and bool(kinds & {T.Grad, T.Jvp, T.Vmap})


class _Static:
    """The operators' non-tensor arguments, handed to the Functions as one pytree leaf (the
    transforms flatten lists into leaves and then miscount the tangents of a jvp)."""
    __slots__ = ("args",)

    def __init__(self, *args):
        self.args = args


def _through_functions() -> bool:
    """The formulas run through the autograd.Functions below (a torch.func transform, or
    forward-mode AD) rather than the operators."""
    return _functorch_active() or _forward_ad_active()


def _conv_call():
    """full_conv as the functional API and the formulas call it: the operator, or under a
    transform or forward-mode AD _FullConvFunction (the operator's autograd formula is
    reverse-mode only): its jvp forms the tangent from linearity (conv(dx, w) + conv(x, dw) +
    db) and its backward runs full_conv_backward through a Function with a jvp too, so a
    reverse-mode gradient taken under the dual level carries tangents (forward-over-reverse),
    also through layers whose own arguments carry none (a tangent may reach their backward
    from a later layer)."""
    if not _through_functions():
        return torch.ops.fullconv.full_conv
    return lambda input, weight, bias, *rest: _FullConvFunction.apply(input, weight, bias, _Static(*rest))


def _conv_bwd_call():
    """full_conv_backward as the formulas call it: the operator, or under a transform or
    forward-mode AD the Function below, whose jvp carries tangents through a backward
    (forward-over-reverse: Hessian-vector products, gradgradcheck's check_fwd_over_rev)."""
    if not _through_functions():
        return torch.ops.fullconv.full_conv_backward
    return lambda gy, input, weight, *rest: _FullConvBackwardFunction.apply(gy, input, weight, _Static(*rest))


class _FullConvFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, weight, bias, static):
        return torch.ops.fullconv.full_conv(input, weight, bias, *static.args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _full_conv_setup_context(ctx, (*inputs[:3], *inputs[3].args), output)
        ctx.save_for_forward(*inputs[:2])

    @staticmethod
    def backward(ctx, grad_output):
        return _full_conv_backward(ctx, grad_output)[:4]

    @staticmethod
    def jvp(ctx, t_input, t_weight, t_bias, _):
        input, weight = ctx.saved_tensors
        stride, dilation, groups = ctx.conv_args
        shape = _full_conv_fake(input, weight, None, stride, dilation, groups).shape
        return _conv_tangent(_conv_call(), input, weight, t_input, t_weight, t_bias, stride, dilation, groups,
                             shape)


class _FullConvBackwardFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(grad_output, input, weight, static):
        return torch.ops.fullconv.full_conv_backward(grad_output, input, weight, *static.args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _backward_setup_context(ctx, (*inputs[:3], *inputs[3].args), output)
        ctx.save_for_forward(*inputs[:3])
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, gg_input, gg_weight, gg_bias):
        return _backward_backward(ctx, gg_input, gg_weight, gg_bias)[:4]

    @staticmethod
    def jvp(ctx, t_grad_output, t_input, t_weight, _):
        """grad_input is bilinear in (grad_output, weight), grad_weight in (grad_output, input),
        grad_bias linear in grad_output."""
        grad_output, input, weight = ctx.saved_tensors
        stride, dilation, groups = ctx.conv_args
        mask = ctx.output_mask
        bwd = _conv_bwd_call()
        outs = [None, None, None]

        def add(i, value):
            outs[i] = value if outs[i] is None else outs[i] + value
        if t_grad_output is not None:
            for i, g in enumerate(bwd(t_grad_output, input, weight, stride, dilation, groups, list(mask))):
                if mask[i]:
                    add(i, g)
        if t_weight is not None and mask[0]:
            add(0, bwd(grad_output, input, t_weight, stride, dilation, groups, [True, False, False])[0])
        if t_input is not None and mask[1]:
            add(1, bwd(grad_output, t_input, weight, stride, dilation, groups, [False, True, False])[1])
        like = (input, weight, weight.new_empty((weight.shape[0],)))
        return tuple((torch.zeros_like(l) if m else input.new_empty((0,))) if o is None else o
                     for o, l, m in zip(outs, like, mask))


# The C++ autograd formulas (csrc/autograd.cpp) call full_conv_backward below forward-mode AD.
# When their backward meets a tangent (the forward ran outside a dual level, its gradient is
# taken inside one: a Hessian-vector product of a model built before the level opened) they
# call this operator instead, which runs the backward through the Function above.
torch.library.define(
    "fullconv::_full_conv_backward_dual",
    "(Tensor grad_output, Tensor input, Tensor weight, int[] stride, int[] dilation, int groups, "
    "bool[3] output_mask) -> (Tensor, Tensor, Tensor)")


@torch.library.impl("fullconv::_full_conv_backward_dual", "CompositeImplicitAutograd")
def _full_conv_backward_dual(grad_output, input, weight, stride, dilation, groups, output_mask):
    return _FullConvBackwardFunction.apply(grad_output, input, weight,
                                           _Static(stride, dilation, groups, list(output_mask)))


# --- functional API -------------------------------------------------------------------------

def _is_proxy(*args) -> bool:
    """torch.fx symbolic tracing: the arguments are Proxies (the op is recorded as it is)."""
    return any(isinstance(a, torch.fx.Proxy) for a in args)


def _forward_ad_active() -> bool:
    return torch.autograd.forward_ad._current_level >= 0


def _plain_eager() -> bool:
    """A plain eager call: no compiling, no torch.func transform, no forward-mode AD. There the
    functional API calls the operators at once (they check their arguments themselves, with the
    same checks in C++) and runs its Python checks only for a call they refuse
    (`_checked_on_refusal`): the checks cost more than a small layer's kernels (NOTES entry 32)."""
    return not _functorch_active() and not _forward_ad_active() and not torch.compiler.is_compiling()


def _checked_on_refusal(call, checks):
    """call(); if the operator refuses, checks() raises the functional API's error type and
    message (outside the handler, so the traceback does not show the operator's error first),
    or, where the Python checks pass, the operator's own error is raised."""
    try:
        return call()
    except Exception as e:  # noqa: BLE001 - re-raised below unless the checks raise their own
        error = e
    checks()
    raise error


def _full_conv(nd: int, input: Tensor, weight: Tensor, bias: Optional[Tensor],
               stride: IntOrTuple, dilation: IntOrTuple, groups: int) -> Tensor:
    name = f"full_conv{nd}d"
    if _is_proxy(input, weight, bias):
        return torch.ops.fullconv.full_conv(input, weight, bias, list(_tuple(stride, nd, "stride")),
                                            list(_tuple(dilation, nd, "dilation")), groups)
    if not isinstance(weight, Tensor):
        raise FullConvTypeError(f"{name}: weight must be a Tensor, got {type(weight).__name__}")
    if weight.dim() != nd + 2:
        raise FullConvError(f"{name}: weight must be {nd + 2}-D (out_channels, "
                            f"in_channels/groups, *kernel_size), got shape {tuple(weight.shape)}")
    stride = _tuple(stride, nd, "stride")
    dilation = _tuple(dilation, nd, "dilation")
    groups = _scalar_int(groups)
    if type(groups) is int and _plain_eager():
        return _checked_on_refusal(
            lambda: torch.ops.fullconv.full_conv(input, weight, bias, list(stride), list(dilation), groups),
            lambda: check_arguments(input, weight, bias, stride, dilation, groups, name, autocast=True))
    check_arguments(input, weight, bias, stride, dilation, groups, name, autocast=True)
    if _autocast_on(input) and _through_functions():
        # cast as the op's autocast kernel would, before the Function saves them (with their
        # tangents: .to has a forward-AD formula)
        input, weight = input.to(_autocast_dtype(input)), weight.to(_autocast_dtype(weight))
        bias = bias.to(_autocast_dtype(bias)) if bias is not None else None
    return _conv_call()(input, weight, bias, list(stride), list(dilation), int(groups))


def full_conv1d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                stride: IntOrTuple = 1, dilation: IntOrTuple = 1, groups: int = 1) -> Tensor:
    """1-D full convolution: ``F.conv1d(input, weight, bias, stride, padding=dilation*(k-1),
    dilation, groups)`` without materialising the padding. Input ``(N, C, L)`` or ``(C, L)``."""
    return _full_conv(1, input, weight, bias, stride, dilation, groups)


def full_conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                stride: IntOrTuple = 1, dilation: IntOrTuple = 1, groups: int = 1) -> Tensor:
    """2-D full convolution: ``F.conv2d(..., padding=dilation*(k-1))`` without the padding.
    Input ``(N, C, H, W)`` or ``(C, H, W)``."""
    return _full_conv(2, input, weight, bias, stride, dilation, groups)


def full_conv3d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                stride: IntOrTuple = 1, dilation: IntOrTuple = 1, groups: int = 1) -> Tensor:
    """3-D full convolution: ``F.conv3d(..., padding=dilation*(k-1))`` without the padding.
    Input ``(N, C, D, H, W)`` or ``(C, D, H, W)``."""
    return _full_conv(3, input, weight, bias, stride, dilation, groups)


# --- fused residual epilogue ----------------------------------------------------------------

def _check_residual(out_shape, residual, padding, like, op_name, autocast=False, check_dtype=True):
    """Mirrors check_residual() in csrc/ops.cpp (``autocast``: dtypes as the op's autocast
    kernel will see them; ``check_dtype=False``: residual and like may differ, as padded_add's
    autocast kernel promotes them)."""
    if not isinstance(residual, Tensor):
        raise FullConvTypeError(f"{op_name}: residual must be a Tensor, got {type(residual).__name__}")
    _check_supported_dtype(like.dtype, op_name)
    nd = len(padding)
    if residual.dim() != len(out_shape) or not 1 <= nd <= 3 or residual.dim() < nd + 1:
        raise FullConvError(f"{op_name}: residual of shape {tuple(residual.shape)} and padding "
                            f"{tuple(padding)} do not fit an output of shape {tuple(out_shape)}")
    first = residual.dim() - nd
    for i in range(residual.dim()):
        pad = padding[i - first] if i >= first else 0
        if pad < 0:
            raise FullConvError(f"{op_name}: residual padding must be non-negative, got {tuple(padding)}")
        if residual.shape[i] + 2 * pad != out_shape[i]:
            raise FullConvError(f"{op_name}: residual of shape {tuple(residual.shape)} padded by "
                                f"{tuple(padding)} on each side does not match the output shape "
                                f"{tuple(out_shape)} (dim {i})")
    dtype_of = _autocast_dtype if autocast else (lambda t: t.dtype)
    if check_dtype and dtype_of(residual) != dtype_of(like):
        raise FullConvTypeError(f"{op_name}: residual must have dtype {like.dtype}, got {residual.dtype}")
    if residual.device != like.device:
        raise FullConvError(f"{op_name}: residual must be on {like.device}, got {residual.device}")


def centred_padding(out_shape, residual_shape, nd: int) -> list:
    """Symmetric padding that centres a residual in an output (per spatial dim)."""
    pads = []
    for o, r in zip(out_shape[-nd:], residual_shape[-nd:]):
        if (o - r) % 2 or o < r:
            raise FullConvError(f"cannot centre a residual of spatial size {tuple(residual_shape[-nd:])} "
                                f"in an output of spatial size {tuple(out_shape[-nd:])}: the "
                                "difference must be even and non-negative")
        pads.append((o - r) // 2)
    return pads


def _centre(t: Tensor, padding) -> Tensor:
    first = t.dim() - len(padding)
    for i, p in enumerate(padding):
        t = t.narrow(first + i, p, t.shape[first + i] - 2 * p)
    return t


@torch.library.register_fake("fullconv::full_conv_residual")
def _full_conv_residual_fake(input, weight, bias, residual, stride, dilation, groups,
                             residual_padding, relu):
    _, shape = check_arguments(input, weight, bias, stride, dilation, groups, "full_conv_residual")
    _check_residual(shape, residual, residual_padding, input, "full_conv_residual")
    return input.new_empty(shape).contiguous(memory_format=_output_memory_format(input, weight))


@torch.library.register_fake("fullconv::padded_add")
def _padded_add_fake(input, residual, residual_padding, relu):
    _check_residual(tuple(input.shape), residual, residual_padding, input, "padded_add")
    return torch.empty_like(input, memory_format=_suggest_memory_format(input))


# Their autograd formulas are C++ (csrc/autograd.cpp), as full_conv's: the gradient through
# the ReLU goes to the convolution's backward and, centred, to the residual.


def _check_relu(relu, op_name: str) -> None:
    # a bool (or 0/1, numpy bools); a string or None would otherwise pass as its truth value
    numpy_bool = type(relu).__module__ == "numpy" and type(relu).__name__ in ("bool", "bool_")
    if not isinstance(relu, (bool, numbers.Integral)) and not numpy_bool:
        raise FullConvTypeError(f"{op_name}: relu must be a bool, got {relu!r}")


def padded_add(input: Tensor, residual: Tensor, relu: bool = False, nd: Optional[int] = None) -> Tensor:
    """``input + residual`` with the residual zero-padded symmetrically (centred) to the
    input's spatial size, then ReLU if ``relu``: one pass, no padded copy. ``nd``: number of
    spatial dims (default ``input.dim() - 2``)."""
    if not isinstance(input, Tensor) or not isinstance(residual, Tensor):
        raise FullConvTypeError("padded_add: input and residual must be Tensors")
    _check_relu(relu, "padded_add")
    if nd is not None and (isinstance(nd, bool) or not isinstance(nd, numbers.Integral)):
        raise FullConvTypeError(f"padded_add: nd must be an int or None, got {nd!r}")
    nd = input.dim() - 2 if nd is None else int(nd)
    if nd < 1 or nd > 3:
        raise FullConvError(f"padded_add: expected 1 to 3 spatial dims, got input of shape {tuple(input.shape)}")
    pads = centred_padding(input.shape, residual.shape, nd)
    # the checks in Python for their errors, FullConvError/FullConvTypeError (under autocast the
    # op promotes differing dtypes, as `a + b` does); a plain eager call checks only if refused
    check = lambda: _check_residual(tuple(input.shape), residual, pads, input, "padded_add",  # noqa: E731
                                    check_dtype=not _autocast_on(input))
    if _plain_eager() and not _autocast_on(input):  # (autocast: its kernel would promote any dtype)
        return _checked_on_refusal(lambda: torch.ops.fullconv.padded_add(input, residual, pads, bool(relu)), check)
    check()
    if _functorch_active() or _forward_ad_active():
        return _padded_add_composite(input, residual, pads, relu)
    return torch.ops.fullconv.padded_add(input, residual, pads, bool(relu))


def _f_pad_spec(pads: Sequence[int]) -> tuple:
    """F.pad's padding argument (last dim first) for symmetric per-dim paddings."""
    spec = []
    for p in reversed(pads):
        spec += [p, p]
    return tuple(spec)


def _padded_add_composite(input, residual, pads, relu):
    """padded_add from differentiable PyTorch ops (forward-mode AD duals and torch.func
    transforms; the op's own autograd formula is reverse-mode eager autograd only)."""
    out = input + torch.nn.functional.pad(residual, _f_pad_spec(pads)).to(input.dtype)
    return torch.relu(out) if relu else out


def full_conv_residual(input: Tensor, weight: Tensor, bias: Optional[Tensor], residual: Tensor,
                       stride: IntOrTuple = 1, dilation: IntOrTuple = 1, groups: int = 1,
                       relu: bool = False) -> Tensor:
    """Fused ``act(full_convNd(input, weight, bias, ...) + centred_zero_pad(residual))`` with
    act = ReLU if ``relu``: the residual enters the convolution's epilogue, no padded copy."""
    if not isinstance(weight, Tensor):
        raise FullConvTypeError("full_conv_residual: weight must be a Tensor")
    _check_relu(relu, "full_conv_residual")
    nd = weight.dim() - 2
    stride = _tuple(stride, nd, "stride")
    dilation = _tuple(dilation, nd, "dilation")
    groups = _scalar_int(groups)
    if type(groups) is int and _plain_eager():
        def call():
            # (the operator checks the arguments; a wrong shape here only makes it refuse the call)
            shape = [*input.shape[:-nd - 1], weight.shape[0]] + [
                (L + d * (k - 1) - 1) // s_ + 1 for L, k, s_, d in zip(input.shape[-nd:], weight.shape[2:], stride, dilation)]
            return torch.ops.fullconv.full_conv_residual(input, weight, bias, residual, list(stride), list(dilation),
                                                         groups, centred_padding(shape, residual.shape, nd), bool(relu))
        return _checked_on_refusal(
            call, lambda: _full_conv_residual_checks(input, weight, bias, residual, stride, dilation, groups, nd))
    shape, pads = _full_conv_residual_checks(input, weight, bias, residual, stride, dilation, groups, nd)
    if _functorch_active() or _forward_ad_active():
        out = _full_conv(nd, input, weight, bias, stride, dilation, groups)
        return _padded_add_composite(out, residual, pads, relu)
    return torch.ops.fullconv.full_conv_residual(input, weight, bias, residual, list(stride),
                                                 list(dilation), int(groups), pads, bool(relu))


def _full_conv_residual_checks(input, weight, bias, residual, stride, dilation, groups, nd):
    """full_conv_residual's argument checks; returns (output shape, residual padding)."""
    _, shape = check_arguments(input, weight, bias, stride, dilation, groups, "full_conv_residual",
                               autocast=True)
    if not isinstance(residual, Tensor):
        raise FullConvTypeError("full_conv_residual: residual must be a Tensor")
    pads = centred_padding(shape, residual.shape, nd)
    _check_residual(shape, residual, pads, input, "full_conv_residual", autocast=True)
    return shape, pads
