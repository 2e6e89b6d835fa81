"""What every attention backend, and every op that recomputes in backward,
asks of its inputs (a leaf module)."""
import warnings
from typing import Sequence

import torch
from torch import Tensor

_WARNED = set()


def warn_once(key, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def export_safe() -> bool:
    """True while torch.onnx / torch.export / torch.jit captures a graph."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    if torch.onnx.is_in_onnx_export():
        return True
    is_exporting = getattr(torch.compiler, 'is_exporting', None)
    return bool(is_exporting is not None and is_exporting())


def needs_grad(tensors: Sequence[Tensor]) -> bool:
    """Whether autograd records a graph through any of ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def promoted(*tensors: Tensor):
    """``tensors`` in their promoted dtype (as under autocast)."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return tuple(t.to(dtype) for t in tensors)


def recompute_usable(x: Tensor, params: Sequence, dims: Sequence[int]) -> bool:
    """Whether an op that keeps less for backward and recomputes the rest
    (:mod:`mmvitmix.ops.conv_ffn`, :mod:`mmvitmix.ops.norm_linear`) can take
    ``x`` and ``params`` (None entries skipped): a gradient recorded through
    one of them, ``x`` contiguous with ``x.dim()`` in ``dims``, all
    float32/float64 of one dtype, no autocast, no graph being captured."""
    if not torch.is_grad_enabled():
        return False
    tensors = [x, *(p for p in params if p is not None)]
    if not any(t.requires_grad for t in tensors):
        return False
    if x.dim() not in dims or not x.is_contiguous():
        return False
    if x.dtype not in (torch.float32, torch.float64) or any(
            t.dtype != x.dtype for t in tensors):
        return False
    if torch.is_autocast_enabled(x.device.type):
        return False
    return not export_safe()
