"""Loading of the compiled extension ``mmvitmix._ext`` (a leaf module).

Importing mmvitmix never loads a compiled extension. The first call that
may use a fused kernel asks :func:`load_ext`, which imports
``mmvitmix._ext`` once (built by ``setup.py``; loading it defines
``torch.ops.mmvitmix.*``). A missing extension is remembered, not raised:
:func:`ext_error` says why it did not load. Each op module
(:mod:`.retention`, :mod:`.emsa`) registers its own fake kernels and
autograd once the extension has loaded; this module imports neither.

:func:`register_kernel` lets tests and out-of-tree kernels stand in for a
compiled kernel (``'retention'`` or ``'emsa'``, same signature as the
modules' ``_retention_fused`` / ``_emsa_fused``).
"""
import importlib
from typing import Callable, Dict, Optional, Tuple

import torch

FLOATING = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

_KERNELS: Dict[str, Callable] = {}

# extension state: None until the first load attempt
_EXT = None
_EXT_LOADED: Optional[bool] = None
_EXT_ERROR: Optional[str] = None


def register_kernel(name: str, fn: Optional[Callable]) -> None:
    """Stand ``fn`` in for the fused kernel ``name`` (None: remove it)."""
    if fn is None:
        _KERNELS.pop(name, None)
    else:
        _KERNELS[name] = fn


def registered_kernel(name: str) -> Optional[Callable]:
    """The stand-in registered for ``name``, if any."""
    return _KERNELS.get(name)


_REGISTERED = set()


def fused_op(name: str, register: Callable[[], None],
             fused: Callable) -> Callable:
    """The fused kernel ``name``: a registered stand-in, else ``fused``
    after loading the extension and running the op module's ``register``
    (fake kernels, autograd) once. RuntimeError if the extension is missing.
    """
    stand_in = _KERNELS.get(name)
    if stand_in is not None:
        return stand_in
    if name not in _REGISTERED:
        if not load_ext():
            raise RuntimeError(f'mmvitmix._ext did not load: {_EXT_ERROR}')
        register()
        _REGISTERED.add(name)
    return fused


def load_ext() -> bool:
    """Import ``mmvitmix._ext`` once; True when it is available."""
    global _EXT, _EXT_LOADED, _EXT_ERROR
    if _EXT_LOADED is None:
        try:
            _EXT = importlib.import_module('mmvitmix._ext')
        except ImportError as exc:  # not built, or built for another torch
            _EXT_LOADED, _EXT_ERROR = False, str(exc)
        else:
            _EXT_LOADED = True
    return _EXT_LOADED


def ext_error() -> Optional[str]:
    """Why ``mmvitmix._ext`` did not load (None if it did or was not tried)."""
    return _EXT_ERROR


def ext_with_cuda() -> bool:
    """True when the loaded extension holds the CUDA kernels."""
    return bool(load_ext() and _EXT.with_cuda())


def ext_cuda_archs() -> Optional[Tuple[str, ...]]:
    """The CUDA architectures the extension was compiled for.

    From ``TORCH_CUDA_ARCH_LIST`` at build time, e.g. ``('8.0', '9.0')``;
    None for an extension without CUDA or built before the list was
    recorded.
    """
    if not ext_with_cuda() or not hasattr(_EXT, 'cuda_arch_list'):
        return None
    text = _EXT.cuda_arch_list().replace(' ', ';').replace('_', ';')
    return tuple(a for a in text.split(';') if a)
