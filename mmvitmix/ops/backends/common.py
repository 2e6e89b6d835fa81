"""What every attention backend asks of its inputs (a leaf module)."""
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
