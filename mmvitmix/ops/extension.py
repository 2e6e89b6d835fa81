"""Loading of the compiled extension ``mmvitmix._ext`` (a leaf module).

Importing mmvitmix never loads a compiled extension. The first call that
may use a compiled op asks :func:`load_ext`, which imports ``mmvitmix._ext``
once (built by ``setup.py``; loading it defines ``torch.ops.mmvitmix.*``). A
missing extension is remembered, not raised: :func:`ext_error` says why it
did not load. Which devices an op runs on is the dispatcher's knowledge
(:func:`has_kernel`): the attention ops have CUDA kernels only, the
depthwise-conv weight gradient a CPU one.
"""
import importlib
from typing import Optional, Tuple

import torch

# extension state: None until the first load attempt
_EXT = None
_EXT_LOADED: Optional[bool] = None
_EXT_ERROR: Optional[str] = None


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


@torch._dynamo.assume_constant_result  # a constant of the compiled graph
def has_kernel(op: str, device_type: str) -> bool:
    """Whether ``torch.ops.mmvitmix.<op>`` has a kernel for ``device_type``
    (``'cpu'``, ``'cuda'``) registered with the dispatcher."""
    if not load_ext():
        return False
    key = {'cpu': 'CPU', 'cuda': 'CUDA'}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
        f'mmvitmix::{op}', key)


def ext_with_cuda() -> bool:
    """True when the loaded extension holds the CUDA kernels."""
    return bool(load_ext() and _EXT.with_cuda())


def ext_cuda_archs() -> Optional[Tuple[str, ...]]:
    """The CUDA architectures the extension was compiled for
    (``TORCH_CUDA_ARCH_LIST`` at build time, e.g. ``('8.0', '9.0')``); None
    for an extension without CUDA."""
    if not ext_with_cuda():
        return None
    text = _EXT.cuda_arch_list().replace(' ', ';').replace('_', ';')
    return tuple(a for a in text.split(';') if a)
