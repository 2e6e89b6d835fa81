"""``flex``: :func:`torch.nn.attention.flex_attention` for retention.

The decay is computed from the token indices in a ``score_mod`` (no mask
tensor); compiled with ``torch.compile`` once per shape. torch runs it
forward only on CPU (inference), forward and backward on GPU. EMSA's head
mixing normalises whole attention maps, which FlexAttention cannot express.
"""
from typing import Optional

import torch
from torch import Tensor

from ..decay import RetentionDecay
from ..rotary import rotate_qk
from .common import promoted
from .sdpa import run_folded

NAME = 'flex'

_FLEX = None


def unavailable(op: str, q: Tensor, k: Tensor, v: Tensor,
                grad: bool) -> Optional[str]:
    if op == 'emsa':
        return ('FlexAttention cannot express EMSA\'s head mixing (it '
                'normalises whole attention maps)')
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return 'this torch has no torch.nn.attention.flex_attention'
    if q.device.type == 'cpu' and grad:
        return ('torch runs FlexAttention forward only on CPU ("FlexAttention '
                'does not support backward on CPU"); use sdpa for training')
    if q.device.type not in ('cpu', 'cuda'):
        return f'FlexAttention does not run on {q.device.type}'
    if q.dtype == torch.float64 and q.device.type == 'cpu':
        return 'FlexAttention on CPU takes float32/bfloat16/float16 only'
    return None


def _flex_attention():
    """``flex_attention`` compiled once (recompiled per shape family)."""
    global _FLEX
    if _FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention
        _FLEX = torch.compile(flex_attention, dynamic=False)
    return _FLEX


def retention(q: Tensor, k: Tensor, v: Tensor, decay: RetentionDecay,
              decomposed: bool, sin: Optional[Tensor],
              cos: Optional[Tensor], scale: float,
              overwrite_qk: bool) -> Tensor:
    if sin is not None:
        q, k = rotate_qk(q, k, sin, cos, overwrite_qk)
    q, k, v = promoted(q, k, v)
    log_decay = decay.log_decay.to(torch.float32)
    scale = float(scale)

    def attend(q4, k4, v4, length, grid_width):
        if grid_width == 0:

            def score_mod(score, b, h, q_idx, kv_idx):
                return score + log_decay[h] * (q_idx - kv_idx).abs()
        else:

            def score_mod(score, b, h, q_idx, kv_idx):
                dist = ((q_idx // grid_width - kv_idx // grid_width).abs() +
                        (q_idx % grid_width - kv_idx % grid_width).abs())
                return score + log_decay[h] * dist

        return _flex_attention()(q4, k4, v4, score_mod=score_mod, scale=scale)

    return run_folded(q, k, v, decomposed, attend)
