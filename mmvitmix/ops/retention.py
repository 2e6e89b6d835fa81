"""Retention attention core of RMT (Manhattan Self-Attention, "ReSA").

The seam between the RMT backbone and the attention kernels:
:func:`retention_attention` is the only entry point the backbone calls; it
runs the backend :func:`mmvitmix.ops.backends.choose` picks (one module per
backend in :mod:`mmvitmix.ops.backends`).

Definitions (per head ``h`` with decay ``log_gamma[h] = log(γ_h) < 0``)::

    1-D:  out_i = Σ_j softmax_j(q_i·k_j + log_gamma[h]·|i − j|) v_j
    2-D:  the same over H·W tokens with |Δy| + |Δx| as the distance

Decomposed ReSA is the 1-D op along W (every image row) followed by the 1-D
op along H (every column) applied to the W pass's output; whole ReSA is the
2-D op.

Queries and keys reach :func:`retention_attention` as the projections; RMT's
rotary position shift (:func:`mmvitmix.ops.rotary.theta_shift`, tables
``sin``/``cos``) and the logit scale ``head_dim ** -0.5`` are part of the
seam: the reference applies them as the official code does (``k * scale``,
then ``theta_shift`` of q and k), the other backends rotate first and hand
the scale to their kernel.
"""
import math
from typing import Optional, Tuple, Union

from torch import Tensor

from . import backends
from .backends.reference import retention_1d_pytorch, retention_2d_pytorch
from .decay import RetentionDecay, decay_bias_1d, decay_bias_2d
from .rotary import theta_shift

__all__ = [
    'retention_attention', 'retention_1d', 'retention_2d', 'theta_shift',
    'retention_1d_pytorch', 'retention_2d_pytorch', 'decay_bias_1d',
    'decay_bias_2d', 'RetentionDecay'
]


def _check_rotary(q: Tensor, sin: Optional[Tensor], cos: Optional[Tensor],
                  scale: float) -> None:
    if (sin is None) != (cos is None):
        raise ValueError('retention_attention: give both rotary tables sin '
                         'and cos, or neither')
    if sin is not None:
        expect = tuple(q.shape[2:])
        for name, table in (('sin', sin), ('cos', cos)):
            if tuple(table.shape) != expect:
                raise ValueError(
                    f'retention_attention: {name} must be (H, W, Dk) = '
                    f'{expect}, got {tuple(table.shape)}')
            if table.requires_grad:
                raise ValueError(
                    f'retention_attention: {name} requires grad, but no '
                    'gradient is computed for the rotary tables')
    if not math.isfinite(scale):
        raise ValueError(f'retention_attention: scale must be finite, got '
                         f'{scale}')


def retention_attention(q: Tensor,
                        k: Tensor,
                        v: Tensor,
                        log_decay: Union[Tensor, RetentionDecay],
                        decomposed: bool,
                        sin: Optional[Tensor] = None,
                        cos: Optional[Tensor] = None,
                        scale: float = 1.0,
                        backend: Optional[str] = None,
                        overwrite_qk: bool = False) -> Tensor:
    """The attention core of one RMT retention layer.

    Computes the retention of ``theta_shift(q)``, ``theta_shift(k · scale)``
    and ``v``; without ``sin``/``cos``, of ``q``, ``k · scale`` and ``v``.

    Args:
        q (Tensor): (B, heads, H, W, Dk) queries (the projection, not yet
            rotated when ``sin``/``cos`` are given).
        k (Tensor): (B, heads, H, W, Dk) keys, likewise.
        v (Tensor): (B, heads, H, W, Dv) values.
        log_decay (Tensor | RetentionDecay): (heads,) ``log γ_h``, or a
            stage's :class:`~mmvitmix.ops.decay.RetentionDecay` shared by
            its blocks (masks made once).
        decomposed (bool): True: the W pass then the H pass (decomposed
            ReSA, early stages). False: whole ReSA over H·W tokens with the
            Manhattan distance.
        sin, cos (Tensor, optional): (H, W, Dk) rotary tables (RMT's
            ``RetNetRelPos2d``); no grad flows to them. Default: None.
        scale (float): multiplies the logits (RMT: ``Dk ** -0.5``).
            Default: 1.0.
        backend (str, optional): one of
            :data:`mmvitmix.ops.backends.BACKENDS`; None or ``'auto'``
            defer to ``MMVITMIX_ATTN_BACKEND``, then to the measured
            choice. Default: None.
        overwrite_qk (bool): ``q`` and ``k`` are the caller's fresh
            projections, used for nothing else: when no gradient is
            recorded they may be rotated in place (RMT's layers pass True).
            Default: False.

    Returns:
        Tensor: (B, heads, H, W, Dv).
    """
    _check_rotary(q, sin, cos, scale)
    decay = (log_decay if isinstance(log_decay, RetentionDecay) else
             RetentionDecay(log_decay))
    module = backends.choose('retention', backend, q, k, v,
                             'decomposed' if decomposed else 'whole')
    return module.retention(q, k, v, decay, decomposed, sin, cos,
                            float(scale), overwrite_qk)


def retention_1d(q: Tensor,
                 k: Tensor,
                 v: Tensor,
                 log_decay: Tensor,
                 backend: Optional[str] = None) -> Tensor:
    """1-D retention on (N, heads, L, D) (q rotated, k scaled)."""
    out = retention_attention(
        q.unsqueeze(2), k.unsqueeze(2), v.unsqueeze(2), log_decay, True,
        backend=backend)  # the H pass over one row is the identity
    return out.squeeze(2)


def retention_2d(q: Tensor,
                 k: Tensor,
                 v: Tensor,
                 log_decay: Tensor,
                 hw: Tuple[int, int],
                 backend: Optional[str] = None) -> Tensor:
    """2-D retention on (N, heads, H·W, D) (q rotated, k scaled)."""
    height, width = hw
    if height * width != q.shape[-2]:
        raise ValueError(f'hw={hw} does not match {q.shape[-2]} tokens')
    shape5 = q.shape[:2] + (height, width)
    out = retention_attention(
        q.reshape(*shape5, q.shape[-1]), k.reshape(*shape5, k.shape[-1]),
        v.reshape(*shape5, v.shape[-1]), log_decay, False, backend=backend)
    return out.flatten(2, 3)
