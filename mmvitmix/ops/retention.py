"""Retention attention core of RMT (Manhattan Self-Attention, "ReSA").

This module is the seam between the RMT backbone and the attention kernels.
:func:`retention_attention` is the only entry point the backbone calls; it
runs one of the backends of :mod:`mmvitmix.ops.backends`: torch's
``scaled_dot_product_attention`` with the decay as an additive mask
(``sdpa``), ``flex_attention`` with the decay in a ``score_mod``
(``flex``), the fused kernels (``torch.ops.mmvitmix.retention_forward``,
C++/CUDA in ``csrc/``; ``fused``) or the plain-PyTorch reference
(``reference``), chosen per call (``auto`` picks the measured fastest).

Definitions (per head ``h`` with decay ``log_gamma[h] = log(γ_h) < 0``)::

    1-D:  out_i = Σ_j softmax_j(q_i·k_j + log_gamma[h]·|i − j|) v_j
    2-D:  the same over H·W tokens with |Δy| + |Δx| as the distance

Decomposed ReSA is the 1-D op along W (every image row) followed by the 1-D
op along H (every column) applied to the W pass's output; whole ReSA is the
2-D op.

Queries and keys reach :func:`retention_attention` as the projections; RMT's
rotary position shift (:func:`theta_shift`, tables ``sin``/``cos``) and the
logit scale ``head_dim ** -0.5`` are part of the seam: the reference path
applies them in PyTorch exactly as the official code does (``k * scale``,
then ``theta_shift`` of q and k), the fused CPU kernel applies them while it
gathers q and k (the rotated tensors never exist in memory; the CUDA route
rotates with ATen before its kernel).

The fused op works on 5-D ``(B, heads, S, L, D)`` tensors of any strides
(``S`` independent sequences of ``L`` tokens each) and writes its output in
``v``'s memory layout, so both decomposed passes read the backbone's
channels-last projections in place and the result needs no copy. It
computes the bias from the token indices, keeps one (float32) logsumexp per
query and recomputes the attention map in backward: no L×L tensor is ever
stored. Gradients flow to ``q``, ``k``, ``v`` and ``log_decay``.
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    'retention_attention', 'retention_1d', 'retention_2d', 'theta_shift',
    'rotate_every_two', 'retention_1d_pytorch', 'retention_2d_pytorch',
    'decay_bias_1d', 'decay_bias_2d'
]


def rotate_every_two(x: Tensor) -> Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) on the last dim."""
    x1 = x[..., ::2]
    x2 = x[..., 1::2]
    return torch.stack([-x2, x1], dim=-1).flatten(-2)


def theta_shift(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotary position shift with per-token ``sin``/``cos`` tables."""
    return x * cos + rotate_every_two(x) * sin


def _theta_shift_lean(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """:func:`theta_shift` with two full-size temporaries instead of five.

    ``rotate_every_two(x) * sin`` equals ``swap_pairs(x) * (sin · s)`` with
    ``s = (-1, 1, -1, 1, ...)``; the product with ``sin · s`` (a table of
    H·W·Dk, not of the batch) is accumulated into ``x * cos`` in place.
    """
    sign = torch.ones(2, dtype=sin.dtype, device=sin.device)
    sign[0] = -1
    signed_sin = sin * sign.repeat(sin.shape[-1] // 2)
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return (x * cos).addcmul_(swapped, signed_sin)


_COMPLEX_ROTARY_DTYPES = (torch.float32, torch.float64)


def rotary_pairs(sin: Tensor, cos: Tensor) -> Optional[Tensor]:
    """The rotary tables as one complex table, when that is exact.

    :func:`theta_shift` with tables whose entries come in equal pairs
    (``sin[..., 2i] == sin[..., 2i+1]``, as RMT's ``RetNetRelPos2d`` makes
    them) is the complex product ``(x_2i + i·x_2i+1) · (cos + i·sin)``: one
    elementwise kernel instead of five (float32/float64 only; torch has no
    complex bfloat16). None when the tables are not paired that way or the
    dtype has no complex counterpart.
    """
    if (sin.dtype not in _COMPLEX_ROTARY_DTYPES or sin.dtype != cos.dtype
            or sin.shape[-1] % 2):
        return None
    if not (torch.equal(sin[..., ::2], sin[..., 1::2])
            and torch.equal(cos[..., ::2], cos[..., 1::2])):
        return None
    return torch.complex(cos[..., ::2], sin[..., ::2])


def _theta_shift_complex(x: Tensor,
                         rotation: Tensor,
                         inplace: bool = False) -> Tensor:
    """:func:`theta_shift` as a complex product (see :func:`rotary_pairs`);
    the result keeps ``x``'s memory layout. ``inplace``: into ``x``."""
    if x.dtype != rotation.real.dtype or x.stride(-1) != 1 or any(
            st % 2 for st in x.stride()[:-1]) or x.storage_offset() % 2:
        # view_as_complex needs pairs adjacent and aligned
        x = x.to(rotation.real.dtype).contiguous()
    pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)))
    if inplace:
        pairs.mul_(rotation)
        return x
    return torch.view_as_real(pairs * rotation).flatten(-2)


def _bias_dtype(q: Tensor, log_decay: Tensor) -> torch.dtype:
    return torch.promote_types(q.dtype, log_decay.dtype)


def decay_bias_1d(length: int, log_decay: Tensor,
                  dtype: torch.dtype) -> Tensor:
    """``log_decay[h] * |i - j|`` as a (heads, L, L) tensor."""
    index = torch.arange(length, device=log_decay.device, dtype=dtype)
    dist = (index[:, None] - index[None, :]).abs()
    return dist * log_decay.to(dtype)[:, None, None]


def decay_bias_2d(height: int, width: int, log_decay: Tensor,
                  dtype: torch.dtype) -> Tensor:
    """``log_decay[h] * (|Δy| + |Δx|)`` as a (heads, H·W, H·W) tensor."""
    ys = torch.arange(height, device=log_decay.device, dtype=dtype)
    xs = torch.arange(width, device=log_decay.device, dtype=dtype)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing='ij'), -1)
    grid = grid.reshape(height * width, 2)
    dist = (grid[:, None, :] - grid[None, :, :]).abs().sum(-1)
    return dist * log_decay.to(dtype)[:, None, None]


def retention_1d_pytorch(q: Tensor, k: Tensor, v: Tensor,
                         log_decay: Tensor) -> Tensor:
    """Reference 1-D retention.

    Args:
        q (Tensor): (N, heads, L, Dk) rotated queries.
        k (Tensor): (N, heads, L, Dk) rotated, pre-scaled keys.
        v (Tensor): (N, heads, L, Dv) values.
        log_decay (Tensor): (heads,) ``log γ`` per head (negative).

    Returns:
        Tensor: (N, heads, L, Dv).
    """
    bias = decay_bias_1d(q.shape[-2], log_decay, _bias_dtype(q, log_decay))
    attn = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1)
    return attn.to(v.dtype) @ v


def retention_2d_pytorch(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor,
                         hw: Tuple[int, int]) -> Tensor:
    """Reference 2-D (whole) retention over H·W tokens.

    Args:
        q, k (Tensor): (N, heads, H·W, Dk), row-major token order.
        v (Tensor): (N, heads, H·W, Dv).
        log_decay (Tensor): (heads,).
        hw (tuple[int, int]): (H, W).

    Returns:
        Tensor: (N, heads, H·W, Dv).
    """
    height, width = hw
    if height * width != q.shape[-2]:
        raise ValueError(f'hw={hw} does not match {q.shape[-2]} tokens')
    bias = decay_bias_2d(height, width, log_decay, _bias_dtype(q, log_decay))
    attn = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1)
    return attn.to(v.dtype) @ v


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fused_op():
    """The fused op (a registered stand-in, else the extension's)."""
    from . import _dispatch
    return _dispatch.fused_op('retention', _register_library, _retention_fused)


def _retention_fused(q: Tensor,
                     k: Tensor,
                     v: Tensor,
                     log_decay: Tensor,
                     width: int,
                     sin: Optional[Tensor] = None,
                     cos: Optional[Tensor] = None,
                     scale: float = 1.0) -> Tensor:
    """The fused op on 5-D ``(B, heads, S, L, D)`` tensors.

    ``width`` 0: 1-D distance along ``L``; else ``L = H·width`` tokens in
    row-major order with the Manhattan distance. With ``sin``/``cos``
    (S, L, Dk) the op uses ``scale·theta_shift(q)`` and ``theta_shift(k)``;
    without them ``scale·q`` and ``k``. Mixed input dtypes (as under
    autocast) are computed in their promoted dtype; the result has ``v``'s
    dtype, as the reference's.
    """
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    out, _ = torch.ops.mmvitmix.retention_forward(
        q.to(dtype), k.to(dtype), v.to(dtype), log_decay, width, sin, cos,
        float(scale))
    return out.to(v.dtype)


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
                        log_decay: Tensor,
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
        log_decay (Tensor): (heads,) ``log γ_h``.
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
            choice (:mod:`mmvitmix.ops.backends`). Default: None.
        overwrite_qk (bool): ``q`` and ``k`` are the caller's fresh
            projections, used for nothing else: when no gradient is
            recorded they may be rotated in place (two tensors fewer to
            allocate; RMT's layers pass True). Default: False.

    Returns:
        Tensor: (B, heads, H, W, Dv).
    """
    _check_rotary(q, sin, cos, scale)
    from .backends import export_safe, resolve_retention
    chosen = resolve_retention(backend, q, k, v, decomposed)
    if chosen == 'fused':
        return _attention_fused(q, k, v, log_decay, decomposed, sin, cos,
                                scale)
    if chosen == 'reference':  # as the official code: k·scale, then rotate
        if scale != 1.0:
            k = k * scale
        if sin is not None:
            q = theta_shift(q, sin, cos)
            k = theta_shift(k, sin, cos)
        return _attention_reference(q, k, v, log_decay, decomposed)
    if sin is not None:
        # complex product on CPU only: measured there; on a GPU the pairing
        # check (torch.equal) would synchronise with the device every call.
        # No complex tensors in an exported graph either (ONNX has none).
        rotation = (rotary_pairs(sin, cos)
                    if q.device.type == 'cpu' and q.dtype == k.dtype ==
                    sin.dtype and not export_safe() else None)
        if rotation is not None:
            inplace = overwrite_qk and not torch.is_grad_enabled()
            q = _theta_shift_complex(q, rotation, inplace)
            k = _theta_shift_complex(k, rotation, inplace)
        else:
            q = _theta_shift_lean(q, sin, cos)
            k = _theta_shift_lean(k, sin, cos)
    return _attention_torch(q, k, v, log_decay, decomposed, scale,
                            flex=chosen == 'flex')


def _attention_fused(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor,
                     decomposed: bool, sin: Optional[Tensor],
                     cos: Optional[Tensor], scale: float) -> Tensor:
    """The fused kernels; they rotate and scale while they read q and k."""
    fused = _fused_op()
    bsz, heads, height, width, dk = q.shape
    dv = v.shape[-1]
    if not decomposed:
        hw = height * width
        tables = ((sin.reshape(1, hw, dk), cos.reshape(1, hw, dk))
                  if sin is not None else (None, None))
        out = fused(
            q.reshape(bsz, heads, 1, hw, dk), k.reshape(bsz, heads, 1, hw, dk),
            v.reshape(bsz, heads, 1, hw, dv), log_decay, width, *tables, scale)
        return out.reshape(bsz, heads, height, width, dv)
    # W pass: S = H sequences of W tokens, read in place; H pass over the
    # transposed views (no copies, the output keeps v's layout)
    tables_t = ((sin.transpose(0, 1), cos.transpose(0, 1))
                if sin is not None else (None, None))
    out_w = fused(q, k, v, log_decay, 0, sin, cos, scale)
    out = fused(
        q.transpose(2, 3), k.transpose(2, 3), out_w.transpose(2, 3),
        log_decay, 0, *tables_t, scale)
    return out.transpose(2, 3)


def _attention_reference(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor,
                         decomposed: bool) -> Tensor:
    """The official code's computation (q rotated, k rotated and scaled)."""
    bsz, heads, height, width, dk = q.shape
    dv = v.shape[-1]
    if not decomposed:
        out = retention_2d_pytorch(
            q.reshape(bsz, heads, height * width, dk),
            k.reshape(bsz, heads, height * width, dk),
            v.reshape(bsz, heads, height * width, dv), log_decay,
            (height, width))
        return out.reshape(bsz, heads, height, width, dv)
    # W pass: one sequence per image row -> (B*H, heads, W, D)
    q_w = q.transpose(1, 2).reshape(bsz * height, heads, width, dk)
    k_w = k.transpose(1, 2).reshape(bsz * height, heads, width, dk)
    v_w = v.transpose(1, 2).reshape(bsz * height, heads, width, dv)
    out_w = retention_1d_pytorch(q_w, k_w, v_w, log_decay)
    out_w = out_w.reshape(bsz, height, heads, width, dv)
    # H pass: one sequence per image column -> (B*W, heads, H, D)
    q_h = q.permute(0, 3, 1, 2, 4).reshape(bsz * width, heads, height, dk)
    k_h = k.permute(0, 3, 1, 2, 4).reshape(bsz * width, heads, height, dk)
    v_h = out_w.permute(0, 3, 2, 1, 4).reshape(bsz * width, heads, height, dv)
    out_h = retention_1d_pytorch(q_h, k_h, v_h, log_decay)
    return out_h.reshape(bsz, width, heads, height, dv).permute(0, 2, 3, 1, 4)


_FLEX = None


def _flex_attention():
    """``flex_attention`` compiled once (recompiled per shape family)."""
    global _FLEX
    if _FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention
        _FLEX = torch.compile(flex_attention, dynamic=False)
    return _FLEX


def _flex_1d(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor,
             scale: float, width: int) -> Tensor:
    """FlexAttention with the decay from the indices (``width`` 0: 1-D)."""
    decay = log_decay.to(torch.float32)

    if width == 0:

        def score_mod(score, b, h, q_idx, kv_idx):
            return score + decay[h] * (q_idx - kv_idx).abs()
    else:

        def score_mod(score, b, h, q_idx, kv_idx):
            dist = ((q_idx // width - kv_idx // width).abs() +
                    (q_idx % width - kv_idx % width).abs())
            return score + decay[h] * dist

    return _flex_attention()(q, k, v, score_mod=score_mod, scale=scale)


def _attention_torch(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor,
                     decomposed: bool, scale: float, flex: bool) -> Tensor:
    """SDPA (decay as an additive mask) or FlexAttention (decay in a
    ``score_mod``) on rotated q and k; the logit scale is the kernels'.

    4-D tensors with the image rows (W pass) or columns (H pass) folded
    into the batch, so torch's flash kernels take them; the W pass folds
    the channels-last projections without a copy.
    """
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    bsz, heads, height, width, dk = q.shape
    dv = v.shape[-1]
    scale = float(scale)

    def run(q4, k4, v4, length, grid_width):
        if flex:
            return _flex_1d(q4, k4, v4, log_decay, scale, grid_width)
        if grid_width:
            mask = decay_bias_2d(length // grid_width, grid_width, log_decay,
                                 dtype)
        else:
            mask = decay_bias_1d(length, log_decay, dtype)
        return torch.nn.functional.scaled_dot_product_attention(
            q4, k4, v4, attn_mask=mask.unsqueeze(0), scale=scale)

    if not decomposed:
        hw = height * width
        out = run(
            q.reshape(bsz, heads, hw, dk), k.reshape(bsz, heads, hw, dk),
            v.reshape(bsz, heads, hw, dv), hw, width)
        return out.reshape(bsz, heads, height, width, dv)
    # W pass: (B, heads, H, W, D) -> (B·H, heads, W, D)
    out_w = run(
        q.transpose(1, 2).reshape(bsz * height, heads, width, dk),
        k.transpose(1, 2).reshape(bsz * height, heads, width, dk),
        v.transpose(1, 2).reshape(bsz * height, heads, width, dv), width, 0)
    if height == 1:
        return out_w.reshape(bsz, 1, heads, width, dv).transpose(1, 2)
    out_w = out_w.reshape(bsz, height, heads, width, dv)
    # H pass: (B, heads, H, W, D) -> (B·W, heads, H, D)
    out = run(
        q.permute(0, 3, 1, 2, 4).reshape(bsz * width, heads, height, dk),
        k.permute(0, 3, 1, 2, 4).reshape(bsz * width, heads, height, dk),
        out_w.permute(0, 3, 2, 1, 4).reshape(bsz * width, heads, height, dv),
        height, 0)
    return out.reshape(bsz, width, heads, height, dv).permute(0, 2, 3, 1, 4)


# --------------------------------------------------------------------------
# torch.library registration of the compiled op (done once, by
# _dispatch.load_ext, after the extension has loaded)
# --------------------------------------------------------------------------


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, log_decay, width, sin, cos, scale = inputs
    for name, table in (('sin', sin), ('cos', cos)):
        if table is not None and table.requires_grad:
            raise ValueError(f'retention: {name} requires grad, but no '
                             'gradient is computed for the rotary tables')
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, log_decay, sin, cos)
    ctx.width = width
    ctx.scale = scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, log_decay, sin, cos = ctx.saved_tensors
    decay_grad = bool(ctx.needs_input_grad[3])
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv, ddecay = torch.ops.mmvitmix.retention_backward(
        grad_out, q, k, v, out, lse, log_decay, ctx.width, decay_grad, sin,
        cos, ctx.scale)
    return (dq, dk, dv, (ddecay if decay_grad else None), None, None, None,
            None)


def _register_library() -> None:
    """Fake (meta) kernels and autograd of ``mmvitmix::retention_*``."""

    @torch.library.register_fake('mmvitmix::retention_forward')
    def _forward_fake(q, k, v, log_decay, width, sin=None, cos=None,
                      scale=1.0):
        lse = q.new_empty(q.shape[:4], dtype=_stats_dtype(q.dtype))
        return torch.empty_like(v), lse

    @torch.library.register_fake('mmvitmix::retention_backward')
    def _backward_fake(grad_out, q, k, v, out, lse, log_decay, width,
                       decay_grad, sin=None, cos=None, scale=1.0):
        return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v),
                log_decay.new_empty(log_decay.shape))

    from .flops import register_torch_formulas
    register_torch_formulas()  # FLOP formula of the compiled op

    torch.library.register_autograd(
        'mmvitmix::retention_forward', _backward,
        setup_context=_setup_context)
