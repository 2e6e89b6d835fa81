"""``reference``: plain PyTorch, computed as the official code computes it.

The float64 oracle of the tests. Materialises every L×L (retention) or N×M
(EMSA) attention map; runs anywhere.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..decay import RetentionDecay
from ..rotary import theta_shift

NAME = 'reference'


def unavailable(op: str, q: Tensor, k: Tensor, v: Tensor,
                grad: bool) -> Optional[str]:
    return None


def _bias_dtype(q: Tensor, log_decay: Tensor) -> torch.dtype:
    return torch.promote_types(q.dtype, log_decay.dtype)


def _attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    attn = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1)
    return attn.to(v.dtype) @ v


def retention_1d_pytorch(q: Tensor, k: Tensor, v: Tensor,
                         log_decay) -> Tensor:
    """Reference 1-D retention: q, k (N, heads, L, Dk) rotated, k scaled;
    v (N, heads, L, Dv); ``log_decay`` (heads,) or a RetentionDecay.
    Returns (N, heads, L, Dv)."""
    decay = _as_decay(log_decay)
    bias = decay.mask(q.shape[-2], 0, _bias_dtype(q, decay.log_decay))
    return _attend(q, k, v, bias)


def retention_2d_pytorch(q: Tensor, k: Tensor, v: Tensor, log_decay,
                         hw: Tuple[int, int]) -> Tensor:
    """Reference 2-D (whole) retention over ``hw = (H, W)`` tokens in
    row-major order: q, k (N, heads, H·W, Dk), v (N, heads, H·W, Dv).
    Returns (N, heads, H·W, Dv)."""
    height, width = hw
    if height * width != q.shape[-2]:
        raise ValueError(f'hw={hw} does not match {q.shape[-2]} tokens')
    decay = _as_decay(log_decay)
    bias = decay.mask(height * width, width,
                      _bias_dtype(q, decay.log_decay))
    return _attend(q, k, v, bias)


def _as_decay(log_decay) -> RetentionDecay:
    return (log_decay if isinstance(log_decay, RetentionDecay) else
            RetentionDecay(log_decay))


def retention(q: Tensor, k: Tensor, v: Tensor, decay: RetentionDecay,
              decomposed: bool, sin: Optional[Tensor],
              cos: Optional[Tensor], scale: float,
              overwrite_qk: bool) -> Tensor:
    """As the official code: ``k · scale``, then ``theta_shift`` of both."""
    if scale != 1.0:
        k = k * scale
    if sin is not None:
        q = theta_shift(q, sin, cos)
        k = theta_shift(k, sin, cos)
    bsz, heads, height, width, dk = q.shape
    dv = v.shape[-1]
    if not decomposed:
        out = retention_2d_pytorch(
            q.reshape(bsz, heads, height * width, dk),
            k.reshape(bsz, heads, height * width, dk),
            v.reshape(bsz, heads, height * width, dv), decay,
            (height, width))
        return out.reshape(bsz, heads, height, width, dv)
    # W pass: one sequence per image row -> (B*H, heads, W, D)
    q_w = q.transpose(1, 2).reshape(bsz * height, heads, width, dk)
    k_w = k.transpose(1, 2).reshape(bsz * height, heads, width, dk)
    v_w = v.transpose(1, 2).reshape(bsz * height, heads, width, dv)
    out_w = retention_1d_pytorch(q_w, k_w, v_w, decay)
    out_w = out_w.reshape(bsz, height, heads, width, dv)
    # H pass: one sequence per image column -> (B*W, heads, H, D)
    q_h = q.permute(0, 3, 1, 2, 4).reshape(bsz * width, heads, height, dk)
    k_h = k.permute(0, 3, 1, 2, 4).reshape(bsz * width, heads, height, dk)
    v_h = out_w.permute(0, 3, 2, 1, 4).reshape(bsz * width, heads, height, dv)
    out_h = retention_1d_pytorch(q_h, k_h, v_h, decay)
    return out_h.reshape(bsz, width, heads, height, dv).permute(0, 2, 3, 1, 4)


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
    # every softmax row sums to one, so the map's mean is exactly 1/M: a
    # reduction's rounding would shift every entry of a near-uniform map,
    # whose deviations from 1/M are tiny (onnxruntime's ReduceMean erred
    # 30x more than torch's mean: docs/deploy.md)
    centred = attn - 1.0 / attn.shape[-1]
    # the biased variance by its definition (two passes), which is faster
    # than torch.var's Welford reduction on these maps
    var = centred.square().mean(dim=(-2, -1), keepdim=True)
    attn = centred / torch.sqrt(var + eps)
    return attn.to(v.dtype) @ v


def emsa(q: Tensor, k: Tensor, v: Tensor, scale: float,
         weight: Optional[Tensor], bias: Optional[Tensor],
         eps: float) -> Tensor:
    return emsa_attention_pytorch(q, k, v, scale, weight, bias, eps)
