"""Attention core of ResT's Efficient Multi-head Self-Attention (EMSA).

The seam between the ResT backbone and the attention kernels:
:func:`emsa_attention` is the only entry point the backbone calls; it runs
the backend :mod:`mmvitmix.ops.backends` picks (the fused kernels below, the
plain-PyTorch reference, or torch's SDPA where EMSA has no head mixing).

Per batch element, with logits ``T_h = scale · q_h k_hᵀ`` (N×M per head)::

    T'_h = Σ_g W[h, g] T_g + b[h]          (1×1 conv across heads)
    P_h  = softmax(T'_h, dim=-1)
    A_h  = (P_h − mean(P_h)) / sqrt(var(P_h) + eps)   (InstanceNorm2d over
                                             the N×M map, no affine, biased var;
                                             mean(P_h) = 1/M exactly)
    out_h = A_h · v_h

The fused op (``torch.ops.mmvitmix.emsa_forward``, C++/CUDA in ``csrc/``)
uses that every softmax row sums to one: the map's mean is exactly ``1/M``,
so ``out_h,i = Σ_j (P_h,ij − 1/M) v_h,j / σ_h`` with
``σ_h² = Σ_ij (P_h,ij − 1/M)² / (N·M) + eps``. One flash-style pass over
key blocks (all heads' logits of a query tile, mixed, then per head an
online softmax kept in centred form: the mean of the exponentials, their
squared deviations and their deviations times v, merged block by block)
gives the output and the variance without storing any N×M map and without
the cancellation of ``Σ P² − 1/M`` when the maps are nearly uniform. The
backward recomputes the map from the saved per-row logsumexp and
``Σ_j (P_ij − 1/M)²``. Gradients flow to q, k, v and weight; the one of
the bias is exactly zero (it shifts whole softmax rows) and is returned
as zeros.
"""
from typing import Optional

import torch
from torch import Tensor

__all__ = [
    'emsa_attention', 'emsa_attention_pytorch', 'emsa_attention_centred'
]


def emsa_attention_pytorch(q: Tensor,
                           k: Tensor,
                           v: Tensor,
                           scale: float,
                           weight: Optional[Tensor] = None,
                           bias: Optional[Tensor] = None,
                           eps: float = 1e-5) -> Tensor:
    """Reference EMSA core in plain PyTorch.

    Args:
        q (Tensor): (B, heads, N, D) queries.
        k (Tensor): (B, heads, M, D) keys (from the reduced tokens).
        v (Tensor): (B, heads, M, Dv) values.
        scale (float): logit scale, ``D ** -0.5`` in ResT.
        weight (Tensor | None): (heads, heads) 1×1 conv across heads; None
            for no head interaction (then plain softmax attention, no
            InstanceNorm: ResT's ``apply_transform=False`` or one head).
        bias (Tensor | None): (heads,) bias of that conv.
        eps (float): InstanceNorm epsilon.

    Returns:
        Tensor: (B, heads, N, Dv).
    """
    attn = (q @ k.transpose(-2, -1)) * scale
    if weight is None:
        return attn.softmax(dim=-1) @ v
    attn = torch.einsum('hg,bgnm->bhnm', weight.to(attn.dtype), attn)
    if bias is not None:
        attn = attn + bias.to(attn.dtype)[None, :, None, None]
    # half-precision maps are normalised in float32, as autocast runs
    # softmax and norms: 1/σ of a near-uniform map overflows float16
    low = attn.dtype in (torch.float16, torch.bfloat16)
    attn = attn.float() if low else attn
    attn = attn.softmax(dim=-1)
    if attn.numel() == 0:  # a batch of 0 images: nothing to normalise
        return attn.to(v.dtype) @ v
    # every softmax row sums to one, so the map's mean is exactly 1/M (as
    # the fused kernel uses): a reduction's rounding would shift every
    # entry of a near-uniform map, whose deviations from 1/M are tiny
    # (onnxruntime's ReduceMean over the N*M map erred 30x more than torch's
    # pairwise mean: up to 1e-2 at ResT's outputs)
    centred = attn - 1.0 / attn.shape[-1]
    # the biased variance by its definition (two passes): torch.var's
    # Welford reduction took 20x longer on these maps (13.7 vs 0.7 ms for
    # a 2x4096x256 map on the benchmarked CPU)
    var = centred.square().mean(dim=(-2, -1), keepdim=True)
    attn = centred / torch.sqrt(var + eps)
    return attn.to(v.dtype) @ v


def emsa_attention_centred(q: Tensor, k: Tensor, v: Tensor, scale: float,
                           weight: Tensor, bias: Optional[Tensor],
                           eps: float) -> Tensor:
    """Head-mixed EMSA by torch's matmul/softmax kernels, reformulated
    exactly (the ``sdpa`` backend's EMSA path; see
    :mod:`mmvitmix.ops.backends`).

    Three identities save whole passes over the N×M maps:

    * the mixing bias adds one constant to a whole map, which the row
      softmax cancels: it is not added (it stays in the autograd graph with
      its true gradient, zero, as the fused kernel returns it);
    * the scale goes into the (heads, heads) mixing weight;
    * ``((P - μ) / σ) @ v = ((P - μ) @ v) / σ``: σ scales the (N, Dv)
      output, not the map; without autograd ``P - μ`` is formed in place.

    μ and σ are the map's numerical mean (the reference takes its exact
    value, 1/M) and biased variance, two-pass, as in the reference.
    """
    bsz, groups, num_q, _ = q.shape
    heads, num_k = weight.shape[0], k.shape[2]
    logits = q @ k.transpose(-2, -1)
    mixed = torch.matmul((weight * scale).to(logits.dtype),
                         logits.reshape(bsz, groups, num_q * num_k))
    attn = mixed.view(bsz, heads, num_q, num_k)
    low = attn.dtype in (torch.float16, torch.bfloat16)
    attn = attn.float() if low else attn  # as the reference
    attn = attn.softmax(dim=-1)
    if attn.numel() == 0:
        return attn.to(v.dtype) @ v
    mean = attn.mean(dim=(-2, -1), keepdim=True)
    if torch.is_grad_enabled() and attn.requires_grad:
        centred = attn - mean  # softmax's backward needs its output
    else:
        centred = attn.sub_(mean)
    var = centred.square().mean(dim=(-2, -1), keepdim=True)
    out = (centred.to(v.dtype) @ v) * torch.rsqrt(var + eps).to(v.dtype)
    if bias is not None and torch.is_grad_enabled() and bias.requires_grad:
        out = out + 0 * bias.sum().to(out.dtype)  # its gradient: zero
    return out


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _emsa_fused(q: Tensor,
                k: Tensor,
                v: Tensor,
                scale: float,
                weight: Tensor,
                bias: Optional[Tensor] = None,
                eps: float = 1e-5) -> Tensor:
    """The fused op (head-mixed EMSA only: ``weight`` is required).

    Mixed input dtypes (as under autocast) are computed in their promoted
    dtype; the result has ``v``'s dtype, as the reference's.
    """
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    if bias is None:
        bias = weight.new_zeros(weight.shape[0])
    out, _, _ = torch.ops.mmvitmix.emsa_forward(
        q.to(dtype), k.to(dtype), v.to(dtype), weight, bias, float(scale),
        float(eps))
    return out.to(v.dtype)


def _fused_op():
    """The fused op (a registered stand-in, else the extension's)."""
    from . import _dispatch
    return _dispatch.fused_op('emsa', _register_library, _emsa_fused)


def emsa_attention(q: Tensor,
                   k: Tensor,
                   v: Tensor,
                   scale: float,
                   weight: Optional[Tensor] = None,
                   bias: Optional[Tensor] = None,
                   eps: float = 1e-5,
                   backend: Optional[str] = None) -> Tensor:
    """EMSA core, run by the backend :mod:`mmvitmix.ops.backends` picks.

    Same arguments and result as :func:`emsa_attention_pytorch`, plus
    ``backend`` (one of :data:`mmvitmix.ops.backends.BACKENDS`; None or
    ``'auto'`` defer to ``MMVITMIX_ATTN_BACKEND``, then to the measured
    choice). Without ``weight`` (no head mixing) EMSA is plain softmax
    attention, run by torch's SDPA (or the reference when asked for); with
    it, ``sdpa`` means torch's kernels on :func:`emsa_attention_centred`.
    """
    from .backends import resolve_emsa
    chosen = resolve_emsa(backend, q, k, v, weight is not None)
    if chosen == 'sdpa' and weight is not None:
        return emsa_attention_centred(q, k, v, scale, weight, bias, eps)
    if chosen == 'sdpa':
        dtype = torch.promote_types(
            torch.promote_types(q.dtype, k.dtype), v.dtype)
        return torch.nn.functional.scaled_dot_product_attention(
            q.to(dtype), k.to(dtype), v.to(dtype),
            scale=float(scale)).to(v.dtype)
    if chosen == 'fused':
        return _fused_op()(q, k, v, scale, weight, bias, eps)
    return emsa_attention_pytorch(q, k, v, scale, weight, bias, eps)


# --------------------------------------------------------------------------
# torch.library registration of the compiled op (done once, by
# _dispatch.load_ext, after the extension has loaded)
# --------------------------------------------------------------------------


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, weight, bias, scale, eps = inputs
    out, lse, dev2 = output
    ctx.save_for_backward(q, k, v, weight, bias, out, lse, dev2)
    ctx.scale, ctx.eps = scale, eps
    ctx.mark_non_differentiable(lse, dev2)


def _backward(ctx, grad_out, grad_lse, grad_dev2):
    q, k, v, weight, bias, out, lse, dev2 = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv, dweight, dbias = torch.ops.mmvitmix.emsa_backward(
        grad_out, q, k, v, weight, bias, out, lse, dev2, ctx.scale, ctx.eps)
    return dq, dk, dv, dweight, dbias, None, None


def _register_library() -> None:
    """Fake (meta) kernels and autograd of ``torch.ops.mmvitmix.emsa_*``."""

    @torch.library.register_fake('mmvitmix::emsa_forward')
    def _forward_fake(q, k, v, weight, bias, scale, eps):
        batch, heads, n = q.shape[:3]
        stats = _stats_dtype(q.dtype)
        # token-major memory, as the kernels allocate it
        out = q.new_empty((batch, n, heads, v.shape[-1])).permute(0, 2, 1, 3)
        return (out,
                q.new_empty((batch, heads, n), dtype=stats),
                q.new_empty((batch, heads, n), dtype=stats))

    @torch.library.register_fake('mmvitmix::emsa_backward')
    def _backward_fake(grad_out, q, k, v, weight, bias, out, lse, dev2,
                       scale, eps):
        return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v),
                weight.new_empty(weight.shape), bias.new_empty(bias.shape))

    from .flops import register_torch_formulas
    register_torch_formulas()  # FLOP formula of the compiled op

    torch.library.register_autograd(
        'mmvitmix::emsa_forward', _backward, setup_context=_setup_context)
