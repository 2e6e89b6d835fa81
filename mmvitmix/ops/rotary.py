"""RMT's rotary position shift (``theta_shift``), written once.

``theta_shift(x) = x·cos + rotate_every_two(x)·sin`` with per-token tables
``sin``/``cos`` of shape (H, W, Dk) whose entries come in equal pairs
(``sin[..., 2i] == sin[..., 2i+1]``, as RMT's ``RetNetRelPos2d`` makes them),
where ``rotate_every_two((x0, x1, x2, x3, ...)) = (-x1, x0, -x3, x2, ...)``.

Every attention backend rotates through :func:`rotate_qk`. On the CPU, for
float32/float64 tables that pair exactly, it is the complex product
``(x_2i + i·x_2i+1)·(cos + i·sin)``: one elementwise kernel instead of
several, and in place when no gradient is recorded. Elsewhere (a GPU, where
checking the pairing would synchronise with the device; bfloat16/float16,
which have no complex type; an exported graph, ONNX having no complex
tensors) it is the real form with two full-size temporaries.
"""
import weakref
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ['theta_shift', 'rotary_pairs', 'rotate_qk']

_COMPLEX_DTYPES = (torch.float32, torch.float64)


def theta_shift(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """``x·cos + rotate_every_two(x)·sin`` (real arithmetic, any dtype).

    ``rotate_every_two(x)·sin`` is ``swap_pairs(x)·(sin·s)`` with
    ``s = (-1, 1, -1, 1, ...)``; the product is accumulated into ``x·cos``.
    """
    sign = torch.ones(2, dtype=sin.dtype, device=sin.device)
    sign[0] = -1
    signed_sin = sin * sign.repeat(sin.shape[-1] // 2)
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return (x * cos).addcmul_(swapped, signed_sin)


#: the last tables seen and their complex table: a stage's blocks all get
#: the same two table tensors, which are checked and combined once
_LAST_PAIRS: list = [None, None, None, None]


def rotary_pairs(sin: Tensor, cos: Tensor) -> Optional[Tensor]:
    """The tables as one complex table ``cos + i·sin`` over the pairs, or
    None when they do not pair exactly or have no complex dtype.

    The result for the last (``sin``, ``cos``) pair is kept (weakly
    referenced tables, their version counters checked), so the blocks of a
    stage share one check and one complex table."""
    if (sin.dtype not in _COMPLEX_DTYPES or sin.dtype != cos.dtype
            or sin.shape[-1] % 2):
        return None
    sin_ref, cos_ref, versions, found = _LAST_PAIRS
    if (sin_ref is not None and sin_ref() is sin and cos_ref() is cos
            and versions == (sin._version, cos._version)):
        return found
    if not (torch.equal(sin[..., ::2], sin[..., 1::2])
            and torch.equal(cos[..., ::2], cos[..., 1::2])):
        found = None
    else:
        found = torch.complex(cos[..., ::2], sin[..., ::2])
    _LAST_PAIRS[:] = [weakref.ref(sin), weakref.ref(cos),
                      (sin._version, cos._version), found]
    return found


def _pairs_viewable(x: Tensor) -> bool:
    """Whether ``view_as_complex`` can view ``x``'s last dim as pairs."""
    return x.stride(-1) == 1 and not any(
        st % 2 for st in x.stride()[:-1]) and not x.storage_offset() % 2


def _as_pairs(x: Tensor) -> Tensor:
    return torch.view_as_complex(x.unflatten(-1, (-1, 2)))


class _ComplexShift(torch.autograd.Function):
    """``x`` times a complex table over its pairs, the result and the
    gradient laid out in memory as ``x`` is.

    Through ``view_as_complex`` / ``view_as_real`` autograd copies the
    gradient twice (to make it contiguous, then back into the layout of the
    projection ``x`` is a view of); here the gradient is written once, into
    ``x``'s layout, as the conjugate product."""

    @staticmethod
    def forward(ctx, x, rotation):
        out = torch.empty_like(x)  # x's strides where x is dense
        torch.mul(_as_pairs(x), rotation, out=_as_pairs(out))
        ctx.save_for_backward(rotation)
        ctx.layout = (out.shape, out.stride())
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        rotation, = ctx.saved_tensors
        if not _pairs_viewable(grad):
            grad = grad.contiguous()
        shape, stride = ctx.layout
        grad_x = grad.new_empty_strided(shape, stride)  # never overlapping
        torch.mul(_as_pairs(grad), rotation.conj(), out=_as_pairs(grad_x))
        return grad_x, None


def _shift_complex(x: Tensor, rotation: Tensor, inplace: bool) -> Tensor:
    """:func:`theta_shift` as a complex product; keeps ``x``'s layout."""
    if x.dtype != rotation.real.dtype or not _pairs_viewable(x):
        # view_as_complex needs pairs adjacent and aligned
        x = x.to(rotation.real.dtype).contiguous()
    if inplace:
        _as_pairs(x).mul_(rotation)
        return x
    if torch.is_grad_enabled() and x.requires_grad:
        return _ComplexShift.apply(x, rotation)
    return torch.view_as_real(_as_pairs(x) * rotation).flatten(-2)


def rotate_qk(q: Tensor,
              k: Tensor,
              sin: Tensor,
              cos: Tensor,
              overwrite: bool = False,
              exporting: bool = False) -> Tuple[Tensor, Tensor]:
    """``theta_shift`` of ``q`` and ``k``.

    Args:
        q, k (Tensor): (..., H, W, Dk).
        sin, cos (Tensor): (H, W, Dk) tables.
        overwrite (bool): ``q`` and ``k`` are the caller's own fresh
            tensors: without autograd they may be rotated in place.
        exporting (bool): a graph is being captured (no complex tensors).
    """
    rotation = None
    if (q.device.type == 'cpu' and q.dtype == k.dtype == sin.dtype
            and not exporting):
        rotation = rotary_pairs(sin, cos)
    if rotation is None:
        return theta_shift(q, sin, cos), theta_shift(k, sin, cos)
    inplace = overwrite and not torch.is_grad_enabled()
    return (_shift_complex(q, rotation, inplace),
            _shift_complex(k, rotation, inplace))
