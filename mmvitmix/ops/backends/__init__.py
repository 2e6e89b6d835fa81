"""Which implementation runs behind the attention seams.

The two seams (:func:`mmvitmix.ops.retention_attention`, RMT, and
:func:`mmvitmix.ops.emsa_attention`, ResT) share the backends, one module
each: ``reference`` (plain PyTorch as the official code, the tests' float64
oracle), ``sdpa`` (torch's maintained kernels), ``flex`` (FlexAttention,
retention only), ``fused`` (the CUDA kernels of ``mmvitmix._ext``, GPU
only). ``auto`` takes the backend :data:`AUTO_TABLE` records as fastest for
the op, device type, shape family and mode, or the next of
:data:`AUTO_FALLBACK` that can take the inputs.

Each backend module says why it cannot take given inputs
(``unavailable(op, q, k, v, grad) -> str | None``); :func:`choose` is the
one chooser that ``auto`` and explicit requests go through; an explicit
request that cannot run raises an error naming the reason and the backends
that can. The request is the seam's ``backend`` argument (the backbones'
``attn_backend``) when not ``'auto'``, else ``MMVITMIX_ATTN_BACKEND``, else
``'auto'``. While a graph is captured (``torch.onnx``, ``torch.export``,
``torch.jit``) every request but ``reference`` runs
:data:`EXPORT_BACKEND` (standard ops only). EMSA without head mixing is
plain softmax attention and runs ``sdpa`` whatever was asked (bar
``reference``); head-mixed EMSA asked of ``flex`` runs ``sdpa`` (said once
in a warning).
"""
import os
from types import ModuleType
from typing import Optional

from torch import Tensor

from . import flex, fused, reference, sdpa
from .common import export_safe, needs_grad, warn_once

__all__ = [
    'BACKENDS', 'ENV_VAR', 'AUTO_TABLE', 'check_backend', 'requested_backend',
    'choose', 'export_safe'
]

BACKENDS = ('auto', 'fused', 'sdpa', 'flex', 'reference')
ENV_VAR = 'MMVITMIX_ATTN_BACKEND'

MODULES = {m.NAME: m for m in (reference, sdpa, flex, fused)}

#: The fastest backend per (op, device type, shape family, mode), as measured
#: by ``tools/analysis_tools/benchmark_ops.py`` / ``benchmark_backbone.py``
#: (figures and machines in docs/benchmarks.md). ``mode`` is ``'infer'``
#: (no autograd graph) or ``'train'``. Devices without a recorded benchmark
#: use torch's maintained kernels (``sdpa``) or the reference, never a
#: hand-written kernel that no benchmark has shown winning there.
AUTO_TABLE = {
    # CPU (three CPUs): sdpa is the fastest retention backend at every RMT
    # stage or within the noise of the reference, beats the reference for
    # head-mixed EMSA; FlexAttention (inference only) loses to it.
    ('retention', 'cpu', 'decomposed', 'infer'): 'sdpa',
    ('retention', 'cpu', 'decomposed', 'train'): 'sdpa',
    ('retention', 'cpu', 'whole', 'infer'): 'sdpa',
    ('retention', 'cpu', 'whole', 'train'): 'sdpa',
    ('emsa', 'cpu', 'mixed', 'infer'): 'sdpa',
    ('emsa', 'cpu', 'mixed', 'train'): 'sdpa',
    # CUDA: no GPU benchmark recorded; the reference for head-mixed EMSA
    ('retention', 'cuda', 'decomposed', 'infer'): 'sdpa',
    ('retention', 'cuda', 'decomposed', 'train'): 'sdpa',
    ('retention', 'cuda', 'whole', 'infer'): 'sdpa',
    ('retention', 'cuda', 'whole', 'train'): 'sdpa',
    ('emsa', 'cuda', 'mixed', 'infer'): 'reference',
    ('emsa', 'cuda', 'mixed', 'train'): 'reference',
}

#: what ``auto`` tries after the table's entry, in order (sdpa and the
#: reference run anywhere)
AUTO_FALLBACK = ('sdpa', 'reference')

#: the backend of each op while a graph is captured (standard ops only)
EXPORT_BACKEND = {'retention': 'sdpa', 'emsa': 'reference'}


def check_backend(value, name: str = 'attn_backend') -> str:
    """``value`` if it names a backend, else a ValueError listing them."""
    if not isinstance(value, str) or value not in BACKENDS:
        raise ValueError(f'{name}={value!r} is not an attention backend; '
                         f'accepted: {", ".join(map(repr, BACKENDS))}')
    return value


def requested_backend(arg: Optional[str] = None) -> str:
    """The backend asked for: ``arg``, else the environment, else auto."""
    if arg is not None and check_backend(arg) != 'auto':
        return arg
    env = os.environ.get(ENV_VAR, '').strip()
    if env:
        return check_backend(env, ENV_VAR)
    return 'auto'


def choose(op: str, backend: Optional[str], q: Tensor, k: Tensor, v: Tensor,
           family: str) -> ModuleType:
    """The backend module that runs this call (never one that can't).

    Args:
        op (str): ``'retention'`` or ``'emsa'``.
        backend (str | None): the request (see :func:`requested_backend`).
        q, k, v (Tensor): the call's inputs.
        family (str): retention: ``'decomposed'`` or ``'whole'``; EMSA:
            ``'mixed'`` (head mixing) or ``'plain'``.
    """
    requested = requested_backend(backend)
    if requested == 'reference':
        return reference
    if op == 'emsa' and family == 'plain':
        return sdpa  # plain softmax attention: torch's kernels
    if export_safe():
        return MODULES[EXPORT_BACKEND[op]]
    grad = needs_grad((q, k, v))
    if requested == 'auto':
        mode = 'train' if grad else 'infer'
        first = AUTO_TABLE.get((op, q.device.type, family, mode), 'sdpa')
        for name in (first, ) + AUTO_FALLBACK:
            why = MODULES[name].unavailable(op, q, k, v, grad)
            if why is None:
                return MODULES[name]
            warn_once((op, name, why),
                      f'attention backend auto: not using {name} for {op}: '
                      f'{why}')
    module = MODULES[requested]
    why = module.unavailable(op, q, k, v, grad)
    if why is None:
        return module
    if op == 'emsa' and requested == 'flex':
        warn_once((op, requested),
                  f'attention backend flex: {why}; running torch\'s '
                  'matmul/softmax kernels (the sdpa backend)')
        return sdpa
    able = [
        name for name in BACKENDS
        if name == 'auto' or MODULES[name].unavailable(op, q, k, v, grad) is
        None
    ]
    raise RuntimeError(
        f'attn_backend={requested!r} cannot run this {op} call on '
        f'{q.device.type} {str(q.dtype).replace("torch.", "")} tensors: '
        f'{why}. Backends that can: {", ".join(map(repr, able))}')
