"""A LayerNorm followed by linears that read its output, keeping only the
norm's input for backward.

In a pre-norm block the LayerNorm keeps its input for backward and the
linears after it keep the norm's output: two embedding-size tensors per norm.
:func:`norm_linears` keeps the input (and the per-token mean and inverse
standard deviation) and recomputes the normalised tensor in backward with
the same kernel on the same input, bit for bit as in the forward; backward
is then torch's own LayerNorm backward. One embedding-size tensor less per
norm, at the cost of one LayerNorm forward in backward.

Used where it can take the inputs (:func:`fused_usable`): a gradient is
recorded, float32/float64 on one dtype, no autocast, no graph being exported
or traced. Everything else runs the modules.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .backends.common import recompute_usable

__all__ = ['norm_linears', 'fused_usable']


def _linear_into(x2: Tensor, weight: Tensor, bias: Optional[Tensor],
                 shape: torch.Size) -> Tensor:
    """``x2 @ weight.T + bias`` written into a fresh tensor of ``shape``
    (not a view of a 2-D product: callers may write into it)."""
    out = x2.new_empty(tuple(shape[:-1]) + (weight.shape[0], ))
    out2 = out.view(-1, weight.shape[0])
    if bias is None:
        torch.mm(x2, weight.t(), out=out2)
    else:
        torch.addmm(bias, x2, weight.t(), out=out2)
    return out


class _NormLinears(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, norm_weight, norm_bias, eps, count, *linear_params):
        shape = (x.shape[-1], )
        normed, mean, rstd = torch.ops.aten.native_layer_norm(
            x, shape, norm_weight, norm_bias, eps)
        normed2 = normed.reshape(-1, shape[0])
        outs = [
            _linear_into(normed2, linear_params[2 * i],
                         linear_params[2 * i + 1], x.shape)
            for i in range(count)
        ]
        weights = [linear_params[2 * i] for i in range(count)]
        ctx.save_for_backward(x, mean, rstd, norm_weight, norm_bias,
                              *weights)
        ctx.eps = eps
        ctx.count = count
        ctx.has_bias = [linear_params[2 * i + 1] is not None
                        for i in range(count)]
        return tuple(outs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        x, mean, rstd, norm_weight, norm_bias, *weights = ctx.saved_tensors
        count, need = ctx.count, ctx.needs_input_grad
        width = x.shape[-1]
        # the forward's normalised tensor again: same kernel, same input
        normed = torch.ops.aten.native_layer_norm(x, (width, ), norm_weight,
                                                  norm_bias, ctx.eps)[0]
        normed2 = normed.reshape(-1, width)
        grad_normed = None
        linear_grads: List[Optional[Tensor]] = []
        for i in range(count):
            grad = grads[i]
            if grad is None:
                linear_grads += [None, None]
                continue
            grad2 = grad.reshape(-1, grad.shape[-1])
            grad_w = grad2.t().mm(normed2) if need[5 + 2 * i] else None
            grad_b = (grad2.sum(0) if ctx.has_bias[i] and need[6 + 2 * i]
                      else None)
            linear_grads += [grad_w, grad_b]
            if grad_normed is None:
                grad_normed = grad2.mm(weights[i])
            else:
                grad_normed.addmm_(grad2, weights[i])
        del normed, normed2
        grad_x = grad_nw = grad_nb = None
        if grad_normed is not None and any(need[:3]):
            layer_norm_backward = torch.ops.aten.native_layer_norm_backward
            grad_x, grad_nw, grad_nb = layer_norm_backward(
                grad_normed.view(x.shape), x, (width, ), mean, rstd,
                norm_weight, norm_bias,
                [need[0], need[1] and norm_weight is not None,
                 need[2] and norm_bias is not None])
        return (grad_x, grad_nw, grad_nb, None, None, *linear_grads)


def fused_usable(x: Tensor, *params: Optional[Tensor]) -> bool:
    """Whether :func:`norm_linears` keeps only the norm's input for these
    inputs: a gradient recorded, contiguous float32/float64 on one dtype, no
    autocast, no export or trace."""
    return recompute_usable(x, params, dims=range(2, 9))


def norm_linears(x: Tensor, norm: nn.LayerNorm,
                 linears: Sequence[nn.Linear]) -> Tuple[Tensor, ...]:
    """``tuple(linear(norm(x)) for linear in linears)``, keeping only ``x``
    for backward where :func:`fused_usable`, else the modules themselves.

    Args:
        x (Tensor): (..., C), contiguous.
        norm (nn.LayerNorm): over the last dimension (C).
        linears (Sequence[nn.Linear]): each taking C features.

    Returns:
        tuple[Tensor]: one (..., C_out) tensor per linear.
    """
    params = [norm.weight, norm.bias]
    for linear in linears:
        params += [linear.weight, linear.bias]
    if (isinstance(norm, nn.LayerNorm) and len(norm.normalized_shape) == 1
            and fused_usable(x, *params)):
        return _NormLinears.apply(x, norm.weight, norm.bias, norm.eps,
                                  len(linears), *params[2:])
    normed = norm(x)
    return tuple(linear(normed) for linear in linears)


def norm_linears_reference(x: Tensor, norm: nn.LayerNorm,
                           linears: Sequence[nn.Linear]) -> Tuple[Tensor, ...]:
    """The plain modules (the tests' oracle)."""
    normed = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias,
                          norm.eps)
    return tuple(F.linear(normed, lin.weight, lin.bias) for lin in linears)
