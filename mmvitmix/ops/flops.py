"""FLOP formulas of the attention seams, for the two counters in use.

mmengine's ``FlopAnalyzer`` (what MMDetection's and MMSegmentation's
``get_flops.py`` call; fvcore's rules, one per multiply-add) and
``torch.utils.flop_counter.FlopCounterMode`` (two per multiply-add) count
only ops they have a formula for. The formulas below make every backend
count what the seam's plain-PyTorch reference counts, its two matmuls (the
decay, rotary, softmax and EMSA's normalisation are elementwise):

* retention: ``B·heads·S·L·L·(Dk + Dv)`` multiply-adds for ``S`` sequences
  of ``L`` tokens (decomposed ReSA: two such calls, W then H pass);
* EMSA: ``B·heads·N·M·(Dk + Dv)``, plus ``B·heads·heads·N·M`` for the 1×1
  mixing across heads.

Registered on import (``mmvitmix.ops`` imports this module): mmengine
handles for ``aten::scaled_dot_product_attention`` and the two compiled ops
(the analyzer traces, so the seams run standard ops:
:data:`mmvitmix.ops.backends.EXPORT_BACKEND`), and torch formulas for
torch's CPU flash-attention op and, once the extension has loaded, the two
compiled ops (:mod:`mmvitmix.ops.backends.fused` registers them with its
glue). ``FlopCounterMode`` copies the registry when constructed: call
``register_torch_formulas(load_ext=True)`` first. Compiled FlexAttention
cannot run under ``FlopCounterMode`` on CPU.
"""
from math import prod
from typing import Any, List, Optional, Sequence

import torch

__all__ = [
    'retention_macs', 'emsa_macs', 'sdpa_macs', 'register_torch_formulas',
    'register_mmengine_handles', 'MMENGINE_HANDLES'
]


def sdpa_macs(q_shape: Sequence[int], k_shape: Sequence[int],
              v_shape: Sequence[int]) -> int:
    """Multiply-adds of ``softmax(q·kᵀ)·v`` on (..., L, D) tensors."""
    batch = prod(q_shape[:-2])
    lq, dk = q_shape[-2], q_shape[-1]
    lk, dv = k_shape[-2], v_shape[-1]
    return batch * lq * lk * (dk + dv)


def retention_macs(q_shape: Sequence[int], k_shape: Sequence[int],
                   v_shape: Sequence[int]) -> int:
    """Multiply-adds of one fused retention call on (B, heads, S, L, D)
    tensors (1-D over L, or 2-D over L = H·W tokens: the same count)."""
    return sdpa_macs(q_shape, k_shape, v_shape)


def emsa_macs(q_shape: Sequence[int], k_shape: Sequence[int],
              v_shape: Sequence[int], mixed: bool = True) -> int:
    """Multiply-adds of one EMSA core on (B, heads, N, D) queries and
    (B, heads, M, D) keys / values; ``mixed``: with the head mixing."""
    macs = sdpa_macs(q_shape, k_shape, v_shape)
    if mixed:
        batch, heads, n = q_shape[:3]
        macs += batch * heads * heads * n * k_shape[-2]
    return macs


# torch.utils.flop_counter (2 FLOPs per multiply-add)
_TORCH_DONE = set()


def _register_torch(target, formula) -> None:
    from torch.utils.flop_counter import flop_registry, register_flop_formula
    if target in flop_registry:
        return
    register_flop_formula(target)(formula)


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args,
                   out_shape=None, **kwargs) -> int:
    return 2 * sdpa_macs(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flop(grad_out_shape, query_shape, key_shape,
                            value_shape, *args, out_shape=None,
                            **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape,
                                    value_shape)


def _retention_flop(q_shape, k_shape, v_shape, *args, out_shape=None,
                    **kwargs) -> int:
    return 2 * retention_macs(q_shape, k_shape, v_shape)


def _emsa_flop(q_shape, k_shape, v_shape, *args, out_shape=None,
               **kwargs) -> int:
    return 2 * emsa_macs(q_shape, k_shape, v_shape, mixed=True)


def register_torch_formulas(load_ext: bool = False) -> None:
    """Register the formulas with ``torch.utils.flop_counter`` (idempotent;
    the compiled ops only once the extension has defined them).
    ``load_ext=True`` loads the extension if it was built, so that a
    ``FlopCounterMode`` constructed next counts the compiled ops."""
    if load_ext:
        from .extension import load_ext as _load
        _load()
    aten = torch.ops.aten
    if 'sdpa_cpu' not in _TORCH_DONE:
        for name, formula in (
            ('_scaled_dot_product_flash_attention_for_cpu', _sdpa_cpu_flop),
            ('_scaled_dot_product_flash_attention_for_cpu_backward',
             _sdpa_cpu_backward_flop)):
            if hasattr(aten, name):
                _register_torch(getattr(aten, name), formula)
        _TORCH_DONE.add('sdpa_cpu')
    ops = torch.ops.mmvitmix
    for name, formula in (('retention_forward', _retention_flop),
                          ('emsa_forward', _emsa_flop)):
        if name in _TORCH_DONE:
            continue
        try:
            target = getattr(ops, name)
        except (AttributeError, RuntimeError):
            continue  # extension not loaded (yet)
        _register_torch(target, formula)
        _TORCH_DONE.add(name)


# mmengine FlopAnalyzer (jit handles; 1 per multiply-add, as fvcore)
def _shape(value) -> Optional[List[int]]:
    from mmengine.analysis.jit_handles import get_shape
    return get_shape(value)


def _sdpa_handle(inputs: List[Any], outputs: List[Any]) -> int:
    return sdpa_macs(_shape(inputs[0]), _shape(inputs[1]), _shape(inputs[2]))


def _retention_handle(inputs: List[Any], outputs: List[Any]) -> int:
    return retention_macs(
        _shape(inputs[0]), _shape(inputs[1]), _shape(inputs[2]))


def _emsa_handle(inputs: List[Any], outputs: List[Any]) -> int:
    return emsa_macs(
        _shape(inputs[0]), _shape(inputs[1]), _shape(inputs[2]), mixed=True)


MMENGINE_HANDLES = {
    'aten::scaled_dot_product_attention': _sdpa_handle,
    'mmvitmix::retention_forward': _retention_handle,
    'mmvitmix::emsa_forward': _emsa_handle,
}


def register_mmengine_handles() -> bool:
    """Add :data:`MMENGINE_HANDLES` to the ops every new mmengine
    ``FlopAnalyzer`` counts (idempotent). False if mmengine is missing."""
    try:
        from mmengine.analysis import complexity_analysis
    except ImportError:
        return False
    defaults = complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS
    for name, handle in MMENGINE_HANDLES.items():
        defaults.setdefault(name, handle)
    return True


register_torch_formulas()
register_mmengine_handles()
