"""Checks shared by the test suite and
``tools/analysis_tools/gpu_acceptance.py``.

* :func:`assert_close_rel`: closeness relative to the scale of the expected
  tensor (golden fixtures, converted checkpoints, re-parameterisation);
* :func:`rel_err`: ``‖got − want‖ / ‖want‖``;
* the inputs of the two attention seams as the backbones call them
  (:func:`rmt_inputs`, :func:`emsa_inputs`), one backend's output and input
  gradients (:func:`run_retention`, :func:`run_emsa`) and the float64
  reference of both (:func:`retention_float64`, :func:`emsa_float64`);
* the largest relative error of a backend against that reference, output and
  gradients (:func:`retention_error`, :func:`emsa_error`).
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch


def assert_close_rel(actual: torch.Tensor,
                     expected: torch.Tensor,
                     rel: float = 1e-5,
                     abs_floor: float = 1e-4) -> None:
    """Assert ``max|a - e| <= rel * max|e| + rel * abs_floor``.

    Relative to the scale of the whole tensor, not element by element: the
    golden fixtures promise about 1e-5 of their scale, and a wrong mapping
    shows as O(1). ``abs_floor`` keeps an all-zero ``expected`` checkable.
    """
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = expected.abs().max().item()
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= rel * scale + rel * abs_floor, (
        f'max abs error {err:.3e} > {rel:g} x max|expected| {scale:.3e}')


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """``‖got − want‖ / ‖want‖`` in float64; inf when ``got`` is not
    finite."""
    got, want = got.double(), want.double()
    if not torch.isfinite(got).all():
        return math.inf
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


# -------------------------------------------------------------- retention


def log_decay_for(heads: int, dtype=torch.float32) -> torch.Tensor:
    """RMT's decays: ``log(1 - 2^(-2 - 4h/heads))``."""
    h = torch.arange(heads, dtype=torch.float64)
    return torch.log(1 - 2**(-2 - 4 * h / heads)).to(dtype)


def rmt_inputs(shape: Sequence[int],
               dtype=torch.float32,
               rotary: bool = True,
               seed: int = 0,
               device='cpu') -> tuple:
    """``q, k, v, log_decay, sin, cos`` of a retention layer.

    ``shape`` is ``(B, heads, H, W, Dk, Dv)``. The projections are
    channels-last tensors viewed as ``(B, heads, H, W, D)``, as RMT makes
    them; the rotary tables come in equal pairs, as RMT's (None without
    ``rotary``); ``log_decay`` is float32.
    """
    bsz, heads, height, width, dk, dv = shape
    gen = torch.Generator().manual_seed(seed)

    def proj(dim):
        x = torch.randn(bsz, height, width, heads, dim, generator=gen)
        return x.to(device, dtype).permute(0, 3, 1, 2, 4)

    q, k, v = proj(dk), proj(dk), proj(dv)
    sin = cos = None
    if rotary:
        angle = torch.rand(dk // 2, generator=gen).repeat_interleave(2)
        phase = torch.arange(height * width)[:, None] * angle[None]
        sin = torch.sin(phase).reshape(height, width, dk).to(device, dtype)
        cos = torch.cos(phase).reshape(height, width, dk).to(device, dtype)
    return q, k, v, log_decay_for(heads).to(device), sin, cos


def run_retention(backend: str,
                  q,
                  k,
                  v,
                  log_decay,
                  decomposed: bool,
                  sin,
                  cos,
                  grad_out: Optional[torch.Tensor] = None) -> tuple:
    """``(output, (dq, dk, dv))`` of one backend, scale ``Dk ** -0.5``;
    the gradients are None without ``grad_out`` (then q, k and v do not
    require grad)."""
    from mmvitmix.ops.retention import retention_attention
    train = grad_out is not None
    q, k, v = (t.detach().requires_grad_(train) for t in (q, k, v))
    out = retention_attention(
        q, k, v, log_decay, decomposed, sin, cos, scale=q.shape[-1]**-0.5,
        backend=backend)
    if not train:
        return out.detach(), None
    grads = torch.autograd.grad(out, (q, k, v), grad_out.to(out.dtype))
    return out.detach(), grads


def _double(tensors):
    return [t.double() if t is not None else None for t in tensors]


def retention_float64(q, k, v, log_decay, decomposed: bool, sin, cos,
                      grad_out: Optional[torch.Tensor] = None) -> tuple:
    """The reference backend on the same inputs in float64: the oracle
    every backend is checked against."""
    q, k, v, sin, cos = _double((q, k, v, sin, cos))
    return run_retention('reference', q, k, v, log_decay.double(),
                         decomposed, sin, cos,
                         None if grad_out is None else grad_out.double())


def retention_error(backend: str,
                    shape: Sequence[int],
                    dtype=torch.float32,
                    decomposed: bool = True,
                    train: bool = True,
                    seed: int = 0,
                    device='cpu') -> float:
    """Largest :func:`rel_err` of ``backend`` against
    :func:`retention_float64`, over the output and (``train``) the
    gradients of q, k and v."""
    q, k, v, log_decay, sin, cos = rmt_inputs(shape, dtype, seed=seed,
                                              device=device)
    grad_out = None
    if train:
        gen = torch.Generator().manual_seed(seed + 1)
        grad_out = torch.randn(tuple(shape[:4]) + (shape[5], ),
                               generator=gen, dtype=torch.float64).to(device)
    want, want_grads = retention_float64(q, k, v, log_decay, decomposed, sin,
                                         cos, grad_out)
    got, grads = run_retention(backend, q, k, v, log_decay, decomposed, sin,
                               cos, grad_out)
    return _max_error(got, want, grads, want_grads)


def _max_error(got, want, grads, want_grads) -> float:
    errs = [rel_err(got, want)]
    errs += [rel_err(g, w) for g, w in zip(grads or (), want_grads or ())]
    return max(errs)


# -------------------------------------------------------------------- EMSA


def emsa_inputs(mixed: bool,
                dtype=torch.float32,
                heads: int = 3,
                seed: int = 0,
                size: Tuple[int, int, int, int] = (2, 23, 7, 8),
                device='cpu') -> List[Optional[torch.Tensor]]:
    """``[q, k, v, weight, bias]`` of an EMSA layer; ``size`` is
    ``(B, N, M, D)`` (queries, reduced keys, head dim). q is a transposed
    view, as ResT makes it. The head-mixing ``weight`` / ``bias`` are
    float32 (None unless ``mixed``)."""
    bsz, n, m, d = size
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(bsz, n, heads, d, generator=gen).transpose(1, 2)
    k = torch.randn(bsz, heads, m, d, generator=gen)
    v = torch.randn(bsz, heads, m, d, generator=gen)
    weight = torch.randn(heads, heads, generator=gen) if mixed else None
    bias = torch.randn(heads, generator=gen) if mixed else None
    return [t.to(device, dtype) for t in (q, k, v)] + [
        t.to(device) if t is not None else None for t in (weight, bias)
    ]


def run_emsa(backend: str,
             q,
             k,
             v,
             scale: float,
             weight,
             bias,
             grad_out: Optional[torch.Tensor] = None,
             eps: float = 1e-5) -> tuple:
    """``(output, (dq, dk, dv))`` of one backend; the gradients are None
    without ``grad_out``."""
    from mmvitmix.ops.emsa import emsa_attention
    train = grad_out is not None
    q, k, v = (t.detach().requires_grad_(train) for t in (q, k, v))
    out = emsa_attention(q, k, v, scale, weight, bias, eps, backend=backend)
    if not train:
        return out.detach(), None
    grads = torch.autograd.grad(out, (q, k, v), grad_out.to(out.dtype))
    return out.detach(), grads


def emsa_float64(q, k, v, scale: float, weight, bias,
                 grad_out: Optional[torch.Tensor] = None,
                 eps: float = 1e-5) -> tuple:
    """The reference backend on the same inputs in float64."""
    q, k, v, weight, bias = _double((q, k, v, weight, bias))
    return run_emsa('reference', q, k, v, scale, weight, bias,
                    None if grad_out is None else grad_out.double(), eps)


def emsa_error(backend: str,
               mixed: bool,
               dtype=torch.float32,
               train: bool = True,
               seed: int = 0,
               heads: int = 4,
               size: Tuple[int, int, int, int] = (2, 197, 49, 64),
               device='cpu') -> float:
    """Largest :func:`rel_err` of ``backend`` against :func:`emsa_float64`
    (output and, with ``train``, the gradients of q, k and v), at a ResT
    EMSA layer (one head unless ``mixed``; mixing weights scaled by
    ``heads ** -0.5`` and given in ``dtype``)."""
    heads = heads if mixed else 1
    q, k, v, weight, bias = emsa_inputs(mixed, dtype, heads, seed, size,
                                        device)
    if mixed:
        weight = (weight * heads**-0.5).to(dtype)
        bias = bias.to(dtype)
    scale = size[-1]**-0.5
    grad_out = None
    if train:
        gen = torch.Generator().manual_seed(seed + 1)
        grad_out = torch.randn(size[0], heads, size[1], size[3],
                               generator=gen, dtype=torch.float64).to(device)
    want, want_grads = emsa_float64(q, k, v, scale, weight, bias, grad_out)
    got, grads = run_emsa(backend, q, k, v, scale, weight, bias, grad_out)
    return _max_error(got, want, grads, want_grads)
