"""``fused``: the CUDA kernels of ``mmvitmix._ext`` (``csrc/``).

Retention: one flash-style kernel that computes the decay from the token
indices and recomputes the map in backward from a saved per-row logsumexp
(no L×L tensor stored). EMSA with head mixing: one pass that normalises the
maps without storing them (identities in ``csrc/common/cuda/
emsa_cuda_host.h``). The kernels run on CUDA GPUs only; on the CPU torch's
kernels are faster (docs/benchmarks.md), so requesting ``fused`` for a CPU
tensor is an error that names the backends that run there.

q and k reach the retention kernel rotated (with torch,
:func:`mmvitmix.ops.rotary.rotate_qk`) and q scaled. The op modules'
glue (fake kernels for ``torch.compile`` / ``torch.export``, autograd,
FLOP formulas) is registered once, on first use (:func:`load`).
"""
import functools
import re
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .. import extension, flops
from ..decay import RetentionDecay
from ..rotary import rotate_qk
from .common import promoted

NAME = 'fused'

#: the CUDA kernels' largest head dim (retention and EMSA)
CUDA_MAX_HEAD_DIM = 128

FLOATING = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

_OPS = {'retention': 'retention_forward', 'emsa': 'emsa_forward'}


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
def _cuda_capability_unsupported(index: int) -> Optional[str]:
    archs = extension.ext_cuda_archs() or ()
    major, minor = torch.cuda.get_device_capability(index)
    if arch_list_covers(archs, (major, minor)):
        return None
    return (f'mmvitmix._ext holds CUDA code for {";".join(archs)} only, '
            f'not for this GPU (compute capability {major}.{minor}); '
            f'rebuild it for this GPU with `TORCH_CUDA_ARCH_LIST='
            f'"{major}.{minor}" MMVITMIX_REINSTALL=1 bash '
            'tools/install_env.sh`')


def unavailable(op: str, q: Tensor, k: Tensor, v: Tensor,
                grad: bool) -> Optional[str]:
    """Why the fused kernel of ``op`` cannot take these inputs (None: it
    can): dtype, the extension (built, with a kernel for this device, for
    this GPU's compute capability) and the CUDA kernels' head-dim limit."""
    dtypes = {t.dtype for t in (q, k, v)}
    if not dtypes <= set(FLOATING):
        return (f'the fused {op} kernel takes float64/float32/float16/'
                f'bfloat16 tensors, got {sorted(map(str, dtypes))}')
    if not extension.load_ext():
        return (f'mmvitmix._ext did not load ({extension.ext_error()}); '
                'build it with `MMVITMIX_REINSTALL=1 bash '
                'tools/install_env.sh`')
    device = q.device.type
    if not extension.has_kernel(_OPS[op], device):
        if device == 'cuda':
            return ('mmvitmix._ext was built without CUDA; rebuild it on a '
                    'machine with nvcc: `FORCE_CUDA=1 MMVITMIX_REINSTALL=1 '
                    'bash tools/install_env.sh`')
        return (f'the fused kernels run on CUDA GPUs only, not on '
                f'{device} tensors')
    if device == 'cuda':
        head_dims = (q.shape[-1], v.shape[-1])
        if max(head_dims) > CUDA_MAX_HEAD_DIM:
            return (f'the CUDA {op} kernel takes head dims up to '
                    f'{CUDA_MAX_HEAD_DIM}, got {max(head_dims)}')
        index = (q.device.index if q.device.index is not None else
                 torch.cuda.current_device())
        return _cuda_capability_unsupported(index)
    return None


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _retention_setup_context(ctx, inputs, output) -> None:
    q, k, v, log_decay, width = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, log_decay)
    ctx.width = width
    ctx.mark_non_differentiable(lse)


def _retention_backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, log_decay = ctx.saved_tensors
    decay_grad = bool(ctx.needs_input_grad[3])
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv, ddecay = torch.ops.mmvitmix.retention_backward(
        grad_out, q, k, v, out, lse, log_decay, ctx.width, decay_grad)
    return dq, dk, dv, (ddecay if decay_grad else None), None


def _emsa_setup_context(ctx, inputs, output) -> None:
    q, k, v, weight, bias, scale, eps = inputs
    out, lse, dev2 = output
    ctx.save_for_backward(q, k, v, weight, bias, out, lse, dev2)
    ctx.scale, ctx.eps = scale, eps
    ctx.mark_non_differentiable(lse, dev2)


def _emsa_backward(ctx, grad_out, grad_lse, grad_dev2):
    q, k, v, weight, bias, out, lse, dev2 = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv, dweight, dbias = torch.ops.mmvitmix.emsa_backward(
        grad_out, q, k, v, weight, bias, out, lse, dev2, ctx.scale, ctx.eps)
    return dq, dk, dv, dweight, dbias, None, None


def _register_library() -> None:
    """Fake (meta) kernels, autograd and FLOP formulas of the two ops."""

    @torch.library.register_fake('mmvitmix::retention_forward')
    def _retention_forward_fake(q, k, v, log_decay, width):
        lse = q.new_empty(q.shape[:4], dtype=_stats_dtype(q.dtype))
        return torch.empty_like(v), lse

    @torch.library.register_fake('mmvitmix::retention_backward')
    def _retention_backward_fake(grad_out, q, k, v, out, lse, log_decay,
                                 width, decay_grad):
        return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v),
                log_decay.new_empty(log_decay.shape))

    @torch.library.register_fake('mmvitmix::emsa_forward')
    def _emsa_forward_fake(q, k, v, weight, bias, scale, eps):
        batch, heads, n = q.shape[:3]
        stats = _stats_dtype(q.dtype)
        # token-major memory, as the kernels allocate it
        out = q.new_empty((batch, n, heads, v.shape[-1])).permute(0, 2, 1, 3)
        return (out, q.new_empty((batch, heads, n), dtype=stats),
                q.new_empty((batch, heads, n), dtype=stats))

    @torch.library.register_fake('mmvitmix::emsa_backward')
    def _emsa_backward_fake(grad_out, q, k, v, weight, bias, out, lse, dev2,
                            scale, eps):
        return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v),
                weight.new_empty(weight.shape), bias.new_empty(bias.shape))

    torch.library.register_autograd(
        'mmvitmix::retention_forward', _retention_backward,
        setup_context=_retention_setup_context)
    torch.library.register_autograd(
        'mmvitmix::emsa_forward', _emsa_backward,
        setup_context=_emsa_setup_context)
    flops.register_torch_formulas()


_LOADED = False


def load() -> None:
    """Load the extension and register the ops' glue (once).
    RuntimeError when the extension is not built."""
    global _LOADED
    if not _LOADED:
        if not extension.load_ext():
            raise RuntimeError(
                f'mmvitmix._ext did not load: {extension.ext_error()}')
        _register_library()
        _LOADED = True


def retention_op(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor,
                 width: int) -> Tensor:
    """The compiled op on 5-D ``(B, heads, S, L, D)`` tensors, q and k
    rotated and q scaled (``width`` 0: 1-D distance along ``L``; else
    ``L = H·width`` tokens in row-major order, Manhattan distance). Mixed
    input dtypes are computed in their promoted dtype; the result has
    ``v``'s dtype."""
    load()
    dtype = v.dtype
    q, k, v = promoted(q, k, v)
    out, _ = torch.ops.mmvitmix.retention_forward(q, k, v, log_decay, width)
    return out.to(dtype)


def retention(q: Tensor, k: Tensor, v: Tensor, decay: RetentionDecay,
              decomposed: bool, sin: Optional[Tensor],
              cos: Optional[Tensor], scale: float,
              overwrite_qk: bool) -> Tensor:
    if sin is not None:
        q, k = rotate_qk(q, k, sin, cos, overwrite_qk)
    if scale != 1.0:
        q = q * scale
    log_decay = decay.log_decay
    bsz, heads, height, width, dk = q.shape
    dv = v.shape[-1]
    if not decomposed:
        hw = height * width
        out = retention_op(
            q.reshape(bsz, heads, 1, hw, dk), k.reshape(bsz, heads, 1, hw, dk),
            v.reshape(bsz, heads, 1, hw, dv), log_decay, width)
        return out.reshape(bsz, heads, height, width, dv)
    # W pass: S = H sequences of W tokens, read in place; H pass over the
    # transposed views (no copies, the output keeps v's layout)
    out_w = retention_op(q, k, v, log_decay, 0)
    out = retention_op(
        q.transpose(2, 3), k.transpose(2, 3), out_w.transpose(2, 3),
        log_decay, 0)
    return out.transpose(2, 3)


def emsa(q: Tensor, k: Tensor, v: Tensor, scale: float,
         weight: Optional[Tensor], bias: Optional[Tensor],
         eps: float) -> Tensor:
    """Head-mixed EMSA (``weight`` required)."""
    load()
    dtype = v.dtype
    q, k, v = promoted(q, k, v)
    if bias is None:
        bias = weight.new_zeros(weight.shape[0])
    out, _, _ = torch.ops.mmvitmix.emsa_forward(q, k, v, weight, bias,
                                                float(scale), float(eps))
    return out.to(dtype)
