"""Attention core of ResT's Efficient Multi-head Self-Attention (EMSA).

The seam between the ResT backbone and the attention kernels:
:func:`emsa_attention` is the only entry point the backbone calls; it runs
the backend :func:`mmvitmix.ops.backends.choose` picks.

Per batch element, with logits ``T_h = scale · q_h k_hᵀ`` (N×M per head)::

    T'_h = Σ_g W[h, g] T_g + b[h]          (1×1 conv across heads)
    P_h  = softmax(T'_h, dim=-1)
    A_h  = (P_h − mean(P_h)) / sqrt(var(P_h) + eps)   (InstanceNorm2d over
                                             the N×M map, no affine, biased var)
    out_h = A_h · v_h

Without head mixing (ResT's ``apply_transform=False``, or one head) EMSA is
plain softmax attention.
"""
from typing import Optional

from torch import Tensor

from . import backends
from .backends.reference import emsa_attention_pytorch
from .backends.sdpa import emsa_attention_centred

__all__ = [
    'emsa_attention', 'emsa_attention_pytorch', 'emsa_attention_centred'
]


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
    choice).
    """
    module = backends.choose('emsa', backend, q, k, v,
                             'mixed' if weight is not None else 'plain')
    return module.emsa(q, k, v, scale, weight, bias, eps)
