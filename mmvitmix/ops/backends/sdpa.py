"""``sdpa``: torch's maintained attention kernels.

Retention: :func:`torch.nn.functional.scaled_dot_product_attention` with
the decay as an additive float mask (made once per stage and shape, see
:class:`mmvitmix.ops.decay.RetentionDecay`); a flash kernel on CPU, flash /
memory-efficient / cuDNN kernels on GPU. EMSA without head mixing is plain
softmax attention (SDPA). EMSA with head mixing normalises whole N×M maps,
which SDPA cannot express: there this backend runs torch's matmul and
softmax kernels on an exact reformulation with fewer passes over the maps
(:func:`emsa_attention_centred`). Runs anywhere.
"""
from typing import Callable, Optional

import torch
from torch import Tensor

from ..decay import RetentionDecay
from ..rotary import rotate_qk
from .common import export_safe, promoted

NAME = 'sdpa'


def unavailable(op: str, q: Tensor, k: Tensor, v: Tensor,
                grad: bool) -> Optional[str]:
    return None


def run_folded(q: Tensor, k: Tensor, v: Tensor, decomposed: bool,
               attend: Callable[[Tensor, Tensor, Tensor, int, int],
                                Tensor]) -> Tensor:
    """Retention on (B, heads, H, W, D) by ``attend(q4, k4, v4, L,
    grid_width)`` on 4-D (batch, heads, L, D) tensors.

    Whole: one call over H·W tokens (``grid_width`` W). Decomposed: the W
    pass with the image rows folded into the batch (the channels-last
    projections fold without a copy), then the H pass over the columns
    (``grid_width`` 0: 1-D).
    """
    bsz, heads, height, width, dk = q.shape
    dv = v.shape[-1]
    if not decomposed:
        hw = height * width
        out = attend(
            q.reshape(bsz, heads, hw, dk), k.reshape(bsz, heads, hw, dk),
            v.reshape(bsz, heads, hw, dv), hw, width)
        return out.reshape(bsz, heads, height, width, dv)
    # W pass: (B, heads, H, W, D) -> (B·H, heads, W, D)
    out_w = attend(
        q.transpose(1, 2).reshape(bsz * height, heads, width, dk),
        k.transpose(1, 2).reshape(bsz * height, heads, width, dk),
        v.transpose(1, 2).reshape(bsz * height, heads, width, dv), width, 0)
    if height == 1:
        return out_w.reshape(bsz, 1, heads, width, dv).transpose(1, 2)
    out_w = out_w.reshape(bsz, height, heads, width, dv)
    # H pass: (B, heads, H, W, D) -> (B·W, heads, H, D)
    out = attend(
        q.permute(0, 3, 1, 2, 4).reshape(bsz * width, heads, height, dk),
        k.permute(0, 3, 1, 2, 4).reshape(bsz * width, heads, height, dk),
        out_w.permute(0, 3, 2, 1, 4).reshape(bsz * width, heads, height, dv),
        height, 0)
    return out.reshape(bsz, width, heads, height, dv).permute(0, 2, 3, 1, 4)


def retention(q: Tensor, k: Tensor, v: Tensor, decay: RetentionDecay,
              decomposed: bool, sin: Optional[Tensor],
              cos: Optional[Tensor], scale: float,
              overwrite_qk: bool) -> Tensor:
    if sin is not None:
        q, k = rotate_qk(q, k, sin, cos, overwrite_qk, export_safe())
    q, k, v = promoted(q, k, v)
    scale = float(scale)

    def attend(q4, k4, v4, length, grid_width):
        mask = decay.mask(length, grid_width, q4.dtype)
        return torch.nn.functional.scaled_dot_product_attention(
            q4, k4, v4, attn_mask=mask.unsqueeze(0), scale=scale)

    return run_folded(q, k, v, decomposed, attend)


def emsa_attention_centred(q: Tensor, k: Tensor, v: Tensor, scale: float,
                           weight: Tensor, bias: Optional[Tensor],
                           eps: float) -> Tensor:
    """Head-mixed EMSA by torch's matmul/softmax kernels, reformulated
    exactly.

    Three identities save whole passes over the N×M maps:

    * the mixing bias adds one constant to a whole map, which the row
      softmax cancels: it is not added (it stays in the autograd graph with
      its true gradient, zero);
    * the scale goes into the (heads, heads) mixing weight;
    * ``((P - μ) / σ) @ v = ((P - μ) @ v) / σ``: σ scales the (N, Dv)
      output, not the map; without autograd ``P - μ`` is formed in place.

    μ is the map's exact mean 1/M (every softmax row sums to one), as in
    the reference; σ² the biased variance, two-pass.
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
    mean = 1.0 / num_k
    if torch.is_grad_enabled() and attn.requires_grad:
        centred = attn - mean  # softmax's backward needs its output
    else:
        centred = attn.sub_(mean)
    var = centred.square().mean(dim=(-2, -1), keepdim=True)
    out = (centred.to(v.dtype) @ v) * torch.rsqrt(var + eps).to(v.dtype)
    if bias is not None and torch.is_grad_enabled() and bias.requires_grad:
        out = out + 0 * bias.sum().to(out.dtype)  # its gradient: zero
    return out


def emsa(q: Tensor, k: Tensor, v: Tensor, scale: float,
         weight: Optional[Tensor], bias: Optional[Tensor],
         eps: float) -> Tensor:
    if weight is not None:
        return emsa_attention_centred(q, k, v, scale, weight, bias, eps)
    q, k, v_ = promoted(q, k, v)
    return torch.nn.functional.scaled_dot_product_attention(
        q, k, v_, scale=float(scale)).to(v.dtype)
