"""Which implementation runs behind the attention seams.

The two seams (:func:`mmvitmix.ops.retention_attention`, RMT, and
:func:`mmvitmix.ops.emsa_attention`, ResT) each have several backends:

``reference``
    Plain PyTorch, written like the official code (the float64 oracle of
    the tests). Materialises the L×L attention map.
``sdpa``
    :func:`torch.nn.functional.scaled_dot_product_attention`, torch's
    maintained kernels (a flash kernel on CPU, flash / memory-efficient /
    cuDNN kernels on GPU). RMT's decay enters as an additive float mask.
``flex``
    :func:`torch.nn.attention.flex_attention` with the decay computed from
    the token indices in a ``score_mod`` (no bias tensor); compiled with
    ``torch.compile`` once per shape. torch runs it forward only on CPU
    (inference), forward and backward on GPU.
``fused``
    The compiled mmcv-style kernels of ``mmvitmix._ext`` (``csrc/``).
``auto``
    The backend that ``docs/benchmarks.md`` recorded as fastest for the
    device type and shape family (:data:`AUTO_TABLE`), restricted to what
    can run on the inputs at hand (:func:`fused_unavailable`).

Selection, per call: the seam's ``backend`` argument (the backbones'
``attn_backend``) when it is not ``'auto'``, else the environment variable
``MMVITMIX_ATTN_BACKEND``, else ``'auto'``. The old switch
``MMVITMIX_FORCE_REFERENCE=1`` still means ``reference``.

While a model is exported (``torch.onnx``, ``torch.export``) or traced /
scripted by ``torch.jit``, ``fused`` and ``flex`` give way to a backend made
of standard ops (:func:`export_safe`), so an exported graph never holds a
custom op.

EMSA with head mixing (ResT's ``apply_transform``) normalises the whole
N×M attention map of every head (InstanceNorm), which neither SDPA nor
FlexAttention can express; there ``sdpa`` means torch's matmul and softmax
kernels on an exact reformulation with fewer passes over the maps
(:func:`mmvitmix.ops.emsa.emsa_attention_centred`), and ``flex`` the same
(said once in a warning). EMSA without head mixing is plain softmax
attention and runs SDPA.
"""
import functools
import os
import re
import warnings
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import _dispatch

__all__ = [
    'BACKENDS', 'ENV_VAR', 'check_backend', 'requested_backend',
    'fused_unavailable', 'resolve_retention', 'resolve_emsa', 'export_safe',
    'AUTO_TABLE'
]

BACKENDS = ('auto', 'fused', 'sdpa', 'flex', 'reference')
ENV_VAR = 'MMVITMIX_ATTN_BACKEND'
LEGACY_ENV_VAR = 'MMVITMIX_FORCE_REFERENCE'

#: The fastest backend per (op, device type, shape family, mode), as measured
#: by ``tools/analysis_tools/benchmark_ops.py`` / ``benchmark_backbone.py``
#: (numbers and machines in docs/benchmarks.md). ``mode`` is ``'infer'``
#: (no autograd graph) or ``'train'``. Devices without a recorded benchmark
#: use torch's maintained kernels (``sdpa``) or the reference: never a
#: hand-written kernel that no benchmark has shown winning there.
AUTO_TABLE = {
    # CPU: 2-core AMD EPYC (Zen 3, AVX2, no AVX-512), torch 2.13, 1 and 2
    # threads (docs/benchmarks.md): SDPA is the fastest retention backend
    # at every RMT-S stage or within the noise of the reference, 2-5x
    # faster than the fused kernel; for EMSA with head mixing the sdpa path
    # (torch's kernels on the exact reformulation) beats the reference
    # (ResT-S 512x512: 6% of the whole backbone, inference and training)
    # and the fused kernel 2-6x; FlexAttention (inference only) loses to
    # SDPA. Re-measured on a Zen 2 EPYC (AVX2): the fused kernels are the
    # slowest or next-slowest backend in every row there too, sdpa the
    # fastest or within the noise.
    ('retention', 'cpu', 'decomposed', 'infer'): 'sdpa',
    ('retention', 'cpu', 'decomposed', 'train'): 'sdpa',
    ('retention', 'cpu', 'whole', 'infer'): 'sdpa',
    ('retention', 'cpu', 'whole', 'train'): 'sdpa',
    ('emsa', 'cpu', 'mixed', 'infer'): 'sdpa',
    ('emsa', 'cpu', 'mixed', 'train'): 'sdpa',
    ('emsa', 'cpu', 'plain', 'infer'): 'sdpa',
    ('emsa', 'cpu', 'plain', 'train'): 'sdpa',
    # CUDA: no GPU benchmark recorded yet (no GPU was lent when the table
    # was written); torch's maintained kernels and the reference.
    ('retention', 'cuda', 'decomposed', 'infer'): 'sdpa',
    ('retention', 'cuda', 'decomposed', 'train'): 'sdpa',
    ('retention', 'cuda', 'whole', 'infer'): 'sdpa',
    ('retention', 'cuda', 'whole', 'train'): 'sdpa',
    ('emsa', 'cuda', 'mixed', 'infer'): 'reference',
    ('emsa', 'cuda', 'mixed', 'train'): 'reference',
    ('emsa', 'cuda', 'plain', 'infer'): 'sdpa',
    ('emsa', 'cuda', 'plain', 'train'): 'sdpa',
}

#: the CUDA kernels' largest head dim (retention and EMSA); the CPU kernels
#: take any
CUDA_MAX_HEAD_DIM = 128

_WARNED = set()


def _warn_once(key, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


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
    if os.environ.get(LEGACY_ENV_VAR, '0') not in ('', '0'):
        return 'reference'
    return 'auto'


def export_safe() -> bool:
    """True while torch.onnx / torch.export / torch.jit captures a graph."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    if torch.onnx.is_in_onnx_export():
        return True
    is_exporting = getattr(torch.compiler, 'is_exporting', None)
    return bool(is_exporting is not None and is_exporting())


def arch_list_covers(archs: Sequence[str], capability: Tuple[int,
                                                              int]) -> bool:
    """Whether code built for ``archs`` (TORCH_CUDA_ARCH_LIST entries such
    as ``'8.0'``, ``'9.0a'``, ``'8.6+PTX'``) runs on a GPU of compute
    capability ``(major, minor)``.

    SASS for X.Y runs on X.Z with Z >= Y; PTX for X.Y is compiled by the
    driver for any capability >= X.Y. Entries that are not numbers (names
    like ``'Hopper'``) are trusted.
    """
    major, minor = capability
    for arch in archs:
        found = re.fullmatch(r'(\d+)\.(\d+)[a-z]?(\+PTX)?', arch.strip())
        if found is None:
            return True
        a_major, a_minor = int(found.group(1)), int(found.group(2))
        if found.group(3) and (major, minor) >= (a_major, a_minor):
            return True
        if major == a_major and minor >= a_minor:
            return True
    return False


@functools.lru_cache(maxsize=None)
def _cuda_capability_ok(index: int) -> Optional[str]:
    # an extension built before the list was recorded: setup.py's old fixed
    # default
    archs = _dispatch.ext_cuda_archs() or ('8.0', '9.0')
    major, minor = torch.cuda.get_device_capability(index)
    if arch_list_covers(archs, (major, minor)):
        return None
    return (f'mmvitmix._ext holds CUDA code for {";".join(archs)} only, '
            f'not for this GPU (compute capability {major}.{minor}); '
            f'rebuild it for this GPU with `TORCH_CUDA_ARCH_LIST='
            f'"{major}.{minor}" MMVITMIX_REINSTALL=1 bash '
            'tools/install_env.sh`')


def fused_unavailable(op: str, tensors: Sequence[Tensor],
                      head_dims: Sequence[int]) -> Optional[str]:
    """Why the fused kernel of ``op`` cannot take these inputs (None: it can).

    The one place that decides it, for both seams: dtype, the extension
    (built, built with CUDA, built for this GPU's compute capability) and
    the CUDA kernels' head-dim limit.
    """
    if _dispatch.registered_kernel(op) is not None:
        return None
    example = tensors[0]
    dtypes = {t.dtype for t in tensors}
    if not dtypes <= set(_dispatch.FLOATING):
        return (f'the fused {op} kernel takes float64/float32/float16/'
                f'bfloat16 tensors, got {sorted(map(str, dtypes))}')
    if not _dispatch.load_ext():
        return (f'mmvitmix._ext did not load ({_dispatch.ext_error()}); '
                'build it with `MMVITMIX_REINSTALL=1 bash '
                'tools/install_env.sh`')
    device = example.device
    if device.type == 'cpu':
        return None
    if device.type != 'cuda':
        return f'the fused {op} kernel has no {device.type} implementation'
    if not _dispatch.ext_with_cuda():
        return ('mmvitmix._ext was built without CUDA; rebuild it on a '
                'machine with nvcc: `FORCE_CUDA=1 MMVITMIX_REINSTALL=1 bash '
                'tools/install_env.sh`')
    if max(head_dims) > CUDA_MAX_HEAD_DIM:
        return (f'the CUDA {op} kernel takes head dims up to '
                f'{CUDA_MAX_HEAD_DIM}, got {max(head_dims)}')
    return _cuda_capability_ok(
        device.index if device.index is not None else
        torch.cuda.current_device())


def _mode() -> str:
    return 'train' if torch.is_grad_enabled() else 'infer'


def _auto(op: str, device: str, family: str, mode: str) -> str:
    return AUTO_TABLE.get((op, device, family, mode), 'reference')


def _flex_unavailable(q: Tensor, needs_grad: bool) -> Optional[str]:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return 'this torch has no torch.nn.attention.flex_attention'
    if q.device.type == 'cpu' and needs_grad:
        return ('torch runs FlexAttention forward only on CPU ("FlexAttention '
                'does not support backward on CPU"); use sdpa for training')
    if q.device.type not in ('cpu', 'cuda'):
        return f'FlexAttention does not run on {q.device.type}'
    if q.dtype == torch.float64 and q.device.type == 'cpu':
        return 'FlexAttention on CPU takes float32/bfloat16/float16 only'
    return None


def resolve_retention(backend: Optional[str], q: Tensor, k: Tensor,
                      v: Tensor, decomposed: bool) -> str:
    """The backend that runs this retention call (never one that can't)."""
    requested = requested_backend(backend)
    if requested == 'reference':
        return 'reference'
    if export_safe():
        return 'sdpa'
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (q, k, v))
    family = 'decomposed' if decomposed else 'whole'
    device = q.device.type
    if requested == 'auto':
        choice = _auto('retention', device, family,
                       'train' if needs_grad else 'infer')
        if choice == 'fused':
            why = fused_unavailable('retention', (q, k, v),
                                    (q.shape[-1], v.shape[-1]))
            if why is not None:
                _warn_once(('retention', 'fused', why),
                           f'attention backend auto: not using the fused '
                           f'retention kernel: {why}; running sdpa')
                return 'sdpa'
        if choice == 'flex' and _flex_unavailable(q, needs_grad):
            return 'sdpa'
        return choice
    if requested == 'fused':
        why = fused_unavailable('retention', (q, k, v),
                                (q.shape[-1], v.shape[-1]))
        if why is not None:
            raise RuntimeError(f'attention backend fused requested, but {why}')
        return 'fused'
    if requested == 'flex':
        why = _flex_unavailable(q, needs_grad)
        if why is not None:
            raise RuntimeError(f'attention backend flex requested, but {why}')
    return requested


def resolve_emsa(backend: Optional[str], q: Tensor, k: Tensor, v: Tensor,
                 mixed: bool) -> str:
    """The backend that runs this EMSA call (never one that can't)."""
    requested = requested_backend(backend)
    if requested == 'reference':
        return 'reference'
    if not mixed:
        # plain softmax attention: torch's kernels whatever was asked
        return 'sdpa'
    if export_safe():
        return 'reference'
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (q, k, v))
    if requested == 'sdpa':
        return 'sdpa'  # torch's kernels on the exact reformulation
    if requested == 'flex':
        _warn_once(('emsa', requested),
                   'attention backend flex: EMSA with head mixing '
                   'normalises whole attention maps, which FlexAttention '
                   'cannot express; running torch\'s matmul/softmax kernels '
                   '(the sdpa path: emsa_attention_centred)')
        return 'sdpa'
    if requested == 'auto':
        choice = _auto('emsa', q.device.type, 'mixed',
                       'train' if needs_grad else 'infer')
        if choice == 'fused':
            why = fused_unavailable('emsa', (q, k, v),
                                    (q.shape[-1], v.shape[-1]))
            if why is not None:
                _warn_once(('emsa', 'fused', why),
                           f'attention backend auto: not using the fused '
                           f'EMSA kernel: {why}; running the reference')
                return 'reference'
        return choice
    why = fused_unavailable('emsa', (q, k, v), (q.shape[-1], v.shape[-1]))
    if why is not None:
        raise RuntimeError(f'attention backend fused requested, but {why}')
    return 'fused'
