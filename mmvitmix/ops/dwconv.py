"""Depthwise convolution on channels-last memory with a fast CPU backward.

:func:`depthwise_conv2d` is ``F.conv2d(x, weight, bias, padding=...,
groups=channels)`` for a stride-1 depthwise convolution. The forward and the
input gradient are torch's own (oneDNN) kernels. The weight gradient on CPU
is ``torch.ops.mmvitmix.dwconv_weight_grad`` (``csrc/pytorch/cpu/
dwconv_cpu.cpp``) and the bias gradient a plain sum, because oneDNN's
depthwise backward-weights primitive is several times slower than the
forward for RMT's 5x5 filters and computes the bias gradient by running the
whole primitive again (figures per CPU: docs/benchmarks.md, from
``tools/analysis_tools/benchmark_dwconv.py``).

The compiled gradient is used only when it can run: CPU, float32/float64,
a channels-last input, the extension loaded, a gradient asked for, no graph
being exported or traced. Everything else is the plain ``F.conv2d``.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['depthwise_conv2d', 'dwconv_weight_grad_reference']


def dwconv_weight_grad_reference(grad: Tensor, x: Tensor, weight: Tensor,
                                 padding: Tuple[int, int]) -> Tensor:
    """torch's own weight gradient (oneDNN on CPU): the tests' oracle."""
    return torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], list(padding), [1, 1], False, [0, 0],
        weight.shape[0], [False, True, False])[1]


_REGISTERED = False


def _weight_grad_op():
    """The compiled op, its fake kernel registered on first use."""
    global _REGISTERED
    if not _REGISTERED:

        @torch.library.register_fake('mmvitmix::dwconv_weight_grad')
        def _fake(grad, x, kh, kw, pad_h, pad_w):
            return x.new_empty((x.shape[-1], 1, kh, kw))

        _REGISTERED = True
    return torch.ops.mmvitmix.dwconv_weight_grad


class _DepthwiseConv2d(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.has_bias = bias is not None
        return F.conv2d(
            x, weight, bias, padding=padding, groups=weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        padding = ctx.padding
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], list(padding), [1, 1], False,
                [0, 0], weight.shape[0], [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad_op()(
                grad.permute(0, 2, 3, 1).contiguous(),
                x.permute(0, 2, 3, 1).contiguous(), weight.shape[2],
                weight.shape[3], padding[0], padding[1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


def _compiled_grad_usable(x: Tensor, weight: Tensor) -> bool:
    if not (torch.is_grad_enabled() and weight.requires_grad):
        return False
    if x.device.type != 'cpu' or x.dtype not in (torch.float32,
                                                 torch.float64):
        return False
    if weight.dtype != x.dtype or torch.is_autocast_enabled('cpu'):
        return False
    if not x.is_contiguous(memory_format=torch.channels_last):
        return False
    from .backends import export_safe
    if export_safe():
        return False
    from .extension import has_kernel
    return has_kernel('dwconv_weight_grad', 'cpu')


def depthwise_conv2d(x: Tensor,
                     weight: Tensor,
                     bias: Optional[Tensor],
                     padding: Tuple[int, int]) -> Tensor:
    """Stride-1 depthwise convolution of ``x`` (N, C, H, W).

    Args:
        x (Tensor): (N, C, H, W); channels-last memory takes the fast CPU
            weight gradient.
        weight (Tensor): (C, 1, kh, kw).
        bias (Tensor, optional): (C,).
        padding (tuple[int, int]): zero padding of H and W.

    Returns:
        Tensor: ``F.conv2d(x, weight, bias, padding=padding, groups=C)``.
    """
    padding = tuple(int(p) for p in padding)
    if (weight.dim() != 4 or weight.shape[1] != 1 or x.dim() != 4
            or x.shape[1] != weight.shape[0]):
        raise ValueError(
            f'depthwise_conv2d: weight must be (C, 1, kh, kw) for an input '
            f'(N, C, H, W), got weight {tuple(weight.shape)} and input '
            f'{tuple(x.shape)}')
    if _compiled_grad_usable(x, weight):
        return _DepthwiseConv2d.apply(x, weight, bias, padding)
    return F.conv2d(x, weight, bias, padding=padding, groups=weight.shape[0])
