"""Lazy lookup of fused kernels for the attention seams.

Importing mmvitmix never loads a compiled extension. The first call of a
seam asks :func:`get_kernel`, which imports ``mmvitmix._ext`` once (built by
``setup.py``; loading it defines ``torch.ops.mmvitmix.*``), registers the
ops' fake kernels and autograd with ``torch.library``, and answers with the
fused function when the extension serves the example tensor's device, or
``None`` (the seam then runs its PyTorch reference). A missing extension
is remembered, not raised: :func:`ext_error` says why it did not load.

Kernel names: ``'retention'`` (5-D strided retention, see
:func:`mmvitmix.ops.retention._retention_fused`) and ``'emsa'``
(:func:`mmvitmix.ops.emsa._emsa_fused`).
"""
import importlib
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

_KERNELS: Dict[str, Callable] = {}
_FLOATING = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

# extension state: None until the first load attempt
_EXT_LOADED: Optional[bool] = None
_EXT_WITH_CUDA = False
_EXT_ERROR: Optional[str] = None
_FUSED: Dict[str, Callable] = {}


def register_kernel(name: str, fn: Callable) -> None:
    """Register a fused implementation for the seam ``name``.

    An explicit registration takes precedence over the compiled extension
    (for tests and out-of-tree kernels).
    """
    _KERNELS[name] = fn


def load_ext() -> bool:
    """Import ``mmvitmix._ext`` once; True when it is available."""
    global _EXT_LOADED, _EXT_WITH_CUDA, _EXT_ERROR
    if _EXT_LOADED is None:
        try:
            ext = importlib.import_module('mmvitmix._ext')
        except ImportError as exc:  # not built, or built for another torch
            _EXT_LOADED, _EXT_ERROR = False, str(exc)
        else:
            from . import emsa, retention
            retention._register_library()
            emsa._register_library()
            _FUSED['retention'] = retention._retention_fused
            _FUSED['emsa'] = emsa._emsa_fused
            _EXT_WITH_CUDA = bool(ext.with_cuda())
            _EXT_LOADED = True
    return _EXT_LOADED


def ext_error() -> Optional[str]:
    """Why ``mmvitmix._ext`` did not load (None if it did or was not tried)."""
    return _EXT_ERROR


def get_kernel(name: str, example: Tensor) -> Optional[Callable]:
    """The fused kernel for ``name`` usable on ``example``'s device, or None."""
    fn = _KERNELS.get(name)
    if fn is not None:
        return fn
    if example.dtype not in _FLOATING or not load_ext():
        return None
    device = example.device.type
    if device == 'cpu' or (device == 'cuda' and _EXT_WITH_CUDA):
        return _FUSED.get(name)
    return None
