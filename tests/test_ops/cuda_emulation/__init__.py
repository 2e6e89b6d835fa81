"""The CUDA ops' host code and kernels, run on the CPU.

:func:`host_kernels` compiles ``emulation.cpp`` (once; torch caches the
build) and registers its functions as the CPU implementation of
``torch.ops.mmvitmix.{retention,emsa}_{forward,backward}`` until the context
ends: inside it, ``attn_backend='fused'`` runs on CPU tensors through the
very code that launches the kernels on a GPU, with every CUDA thread of a
block a host thread (``cuda_emulation.h``). Outside it, the ops have no CPU
kernel, as for users.
"""
import contextlib
import functools
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CSRC = HERE.parents[2] / 'mmvitmix' / 'ops' / 'csrc'
OPS = ('retention_forward', 'retention_backward', 'emsa_forward',
       'emsa_backward')


@functools.lru_cache(maxsize=None)
def build():
    """The compiled emulation module (about a minute the first time)."""
    from torch.utils.cpp_extension import load
    return load(
        name='mmvitmix_cuda_emulation',
        sources=[str(HERE / 'emulation.cpp')],
        extra_include_paths=[str(CSRC / 'common'),
                             str(HERE)],
        extra_cflags=['-O1', '-std=c++20', '-g0'],
        verbose=False)


@contextlib.contextmanager
def host_kernels():
    """Register the emulated CUDA code as the ops' CPU kernels; yields the
    emulation module (``set_max_shared_bytes`` plays the GPU's limit)."""
    from mmvitmix.ops import extension
    from mmvitmix.ops.backends import fused
    assert extension.load_ext(), extension.ext_error()
    fused.load()
    emu = build()
    lib = torch.library.Library('mmvitmix', 'IMPL')
    try:
        for name in OPS:
            lib.impl(name, getattr(emu, name), 'CPU')
        yield emu
    finally:
        lib._destroy()
