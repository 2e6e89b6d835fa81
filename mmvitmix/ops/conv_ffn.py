"""The tail of RMT's conv FFN, ``fc2(g + dwconv(g))`` with ``g = gelu(h)``,
saving only ``h`` for backward.

Written as autograd ops, the tail keeps three hidden-size tensors for
backward: ``h`` (GELU's input), ``g`` (the depthwise conv's input) and
``g + dwconv(g)`` (fc2's input). At detection resolution these are the
largest tensors a block keeps (the hidden size is 3-4x the embedding).
:func:`conv_ffn_tail` keeps ``h`` only and recomputes ``g`` and
``g + dwconv(g)`` in backward, one GELU and one depthwise conv, with the
same kernels and inputs as the forward, so the recomputed tensors are the
forward's bit for bit. The weight gradient of the depthwise conv uses the
compiled CPU kernel of :mod:`.dwconv` where that can run.

Used where it can take the inputs (:func:`fused_tail_usable`): a gradient
is recorded, float32/float64, no autocast, no graph being exported or traced.
Everything else runs the plain ops.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .backends.common import recompute_usable
from .dwconv import _weight_grad_op, dwconv_weight_grad_reference

__all__ = ['conv_ffn_tail', 'conv_ffn_tail_reference', 'fused_tail_usable']


def _centre_plus_one(weight: Tensor) -> Tensor:
    """The depthwise filters with 1 added at the centre: ``x + dwconv(x)``
    as one conv."""
    centre_h, centre_w = weight.shape[2] // 2, weight.shape[3] // 2
    delta = torch.zeros_like(weight)
    delta[:, :, centre_h, centre_w] = 1
    return weight + delta


def _middle(g: Tensor, dw_weight: Tensor, dw_bias: Optional[Tensor],
            padding) -> Tensor:
    """``g + dwconv(g)`` on (B, H, W, C) channels-last tensors."""
    out = F.conv2d(
        g.permute(0, 3, 1, 2), dw_weight, dw_bias, padding=padding,
        groups=dw_weight.shape[0])
    return out.permute(0, 2, 3, 1)


def conv_ffn_tail_reference(h: Tensor, dw_weight: Tensor,
                            dw_bias: Optional[Tensor], fc2_weight: Tensor,
                            fc2_bias: Optional[Tensor]) -> Tensor:
    """The tail as plain autograd ops (the tests' oracle)."""
    g = F.gelu(h)
    padding = (dw_weight.shape[2] // 2, dw_weight.shape[3] // 2)
    d = g + _middle(g, dw_weight, dw_bias, padding)
    return F.linear(d, fc2_weight, fc2_bias)


class _ConvFFNTail(torch.autograd.Function):

    @staticmethod
    def forward(ctx, h, dw_weight, dw_bias, fc2_weight, fc2_bias):
        padding = (dw_weight.shape[2] // 2, dw_weight.shape[3] // 2)
        conv_weight = _centre_plus_one(dw_weight)
        d = _middle(F.gelu(h), conv_weight, dw_bias, padding)
        ctx.save_for_backward(h, dw_weight, dw_bias, fc2_weight)
        ctx.padding = padding
        ctx.has_dw_bias = dw_bias is not None
        ctx.has_fc2_bias = fc2_bias is not None
        # written into a fresh (B, H, W, C) tensor, not returned as a view
        # of a 2-D product: the block adds its residual into it in place
        out = d.new_empty(d.shape[:-1] + (fc2_weight.shape[0], ))
        out2 = out.view(-1, out.shape[-1])
        d2 = d.reshape(-1, d.shape[-1])
        if fc2_bias is None:
            torch.mm(d2, fc2_weight.t(), out=out2)
        else:
            torch.addmm(fc2_bias, d2, fc2_weight.t(), out=out2)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        h, dw_weight, dw_bias, fc2_weight = ctx.saved_tensors
        padding = ctx.padding
        need = ctx.needs_input_grad
        conv_weight = _centre_plus_one(dw_weight)
        # the forward's tensors again, by the same kernels on the same input
        g = F.gelu(h)
        d = _middle(g, conv_weight, dw_bias, padding)
        channels_out = grad_y.shape[-1]
        grad_y2 = grad_y.reshape(-1, channels_out)
        grad_fc2_w = grad_fc2_b = grad_dw_w = grad_dw_b = grad_h = None
        if need[3]:
            grad_fc2_w = grad_y2.t().mm(d.reshape(-1, d.shape[-1]))
        if ctx.has_fc2_bias and need[4]:
            grad_fc2_b = grad_y2.sum(0)
        del d
        # (B, H, W, hidden), channels-last like h
        grad_d = grad_y.matmul(fc2_weight)
        grad_d_nchw = grad_d.permute(0, 3, 1, 2)
        g_nchw = g.permute(0, 3, 1, 2)
        if need[1]:
            if _compiled_usable(g):
                grad_dw_w = _weight_grad_op()(grad_d, g, dw_weight.shape[2],
                                              dw_weight.shape[3], padding[0],
                                              padding[1])
            else:
                grad_dw_w = dwconv_weight_grad_reference(
                    grad_d_nchw, g_nchw, dw_weight, padding)
        if ctx.has_dw_bias and need[2]:
            grad_dw_b = grad_d.sum((0, 1, 2))
        if need[0]:
            grad_g = torch.ops.aten.convolution_backward(
                grad_d_nchw, g_nchw, conv_weight, None, [1, 1],
                list(padding), [1, 1], False, [0, 0], conv_weight.shape[0],
                [True, False, False])[0]
            del grad_d, grad_d_nchw, g, g_nchw
            # in h's layout: GELU's backward then reads both in one order
            grad_g = grad_g.permute(0, 2, 3, 1)
            if not grad_g.is_contiguous():
                grad_g = grad_g.contiguous()
            grad_h = torch.ops.aten.gelu_backward(grad_g, h)
        return grad_h, grad_dw_w, grad_dw_b, grad_fc2_w, grad_fc2_b


def _compiled_usable(g: Tensor) -> bool:
    if g.device.type != 'cpu' or g.dtype not in (torch.float32,
                                                 torch.float64):
        return False
    from .extension import has_kernel
    return has_kernel('dwconv_weight_grad', 'cpu')


def fused_tail_usable(h: Tensor, *params: Optional[Tensor]) -> bool:
    """Whether :func:`conv_ffn_tail` runs the fused backward for these
    inputs: a gradient recorded, (B, H, W, C) contiguous float32/float64 on
    one dtype, no autocast, no export or trace."""
    return recompute_usable(h, params, dims=(4, ))


def conv_ffn_tail(h: Tensor, dw_weight: Tensor, dw_bias: Optional[Tensor],
                  fc2_weight: Tensor, fc2_bias: Optional[Tensor]) -> Tensor:
    """``fc2(g + dwconv(g))``, ``g = gelu(h)``, keeping only ``h`` for
    backward where :func:`fused_tail_usable`, else the plain ops.

    Args:
        h (Tensor): (B, H, W, hidden) fc1's output, contiguous.
        dw_weight (Tensor): (hidden, 1, k, k) depthwise filters (odd k,
            'same' padding).
        dw_bias (Tensor, optional): (hidden,).
        fc2_weight (Tensor): (C, hidden).
        fc2_bias (Tensor, optional): (C,).

    Returns:
        Tensor: (B, H, W, C).
    """
    if fused_tail_usable(h, dw_weight, dw_bias, fc2_weight, fc2_bias):
        return _ConvFFNTail.apply(h, dw_weight, dw_bias, fc2_weight,
                                  fc2_bias)
    return conv_ffn_tail_reference(h, dw_weight, dw_bias, fc2_weight,
                                   fc2_bias)
