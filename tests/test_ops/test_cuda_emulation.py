"""The CUDA kernels on every head-dim bucket and tile configuration, run on
the host by the launchers' own host code (no GPU needed).

``cuda_emulation/`` compiles ``mmvitmix/ops/csrc/common/cuda/*_cuda_host.h``
(which includes the kernels) as C++ with every CUDA thread of a block a host
thread and __syncthreads a barrier (see cuda_emulation.h). This checks the
kernels' indexing, tiling, padding and synchronisation and the host code
around them against the reference; it says nothing about GPU speed. The
Python glue around the ops is tested through the same code in
test_retention.py and test_emsa.py.
"""
import pytest
import torch
from torch.testing import assert_close

from mmvitmix.ops.emsa import emsa_attention_pytorch
from mmvitmix.testing import log_decay_for
from tests.test_ops.test_retention import (make_inputs,
                                           reference_5d)

pytestmark = pytest.mark.slow  # every bucket and tile, float64 to bfloat16


@pytest.fixture
def emu(host_kernels):
    return host_kernels


# (B, heads, S, L, Dk, Dv, width): one case per head-dim bucket (16, 32, 64,
# 128), several query / key tiles, padding of rows and head dims, 1-D and 2-D
RETENTION_CASES = [
    (1, 2, 2, 37, 16, 16, 0),
    (1, 1, 1, 70, 24, 20, 0),
    (1, 2, 1, 35, 40, 33, 5),
    (1, 1, 1, 20, 72, 100, 4),
]


@pytest.mark.parametrize('case', RETENTION_CASES)
@pytest.mark.parametrize('dtype, tol', [(torch.float64, 1e-12),
                                        (torch.float32, 2e-5),
                                        (torch.bfloat16, 3e-2)])
def test_retention_kernels(emu, case, dtype, tol):
    q, k, v, _, width = make_inputs(case, dtype)
    # the op returns the decay's gradient in the decay's dtype
    log_decay = log_decay_for(q.shape[1], torch.float64
                              if dtype == torch.float64 else torch.float32)
    out, lse = emu.retention_forward(q, k, v, log_decay, width)
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    decay = log_decay.double().requires_grad_()
    ref = reference_5d(*leaves, decay, width)
    assert out.stride() == v.stride()
    assert_close(out.double(), ref, rtol=tol, atol=tol)
    assert_close(lse.double(), (q.double() @ k.double().transpose(-1, -2) +
                                _bias(q.shape[3], width, decay.detach()))
                 .logsumexp(-1), rtol=tol, atol=tol)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    grad = grad.to(dtype)
    ref.backward(grad.double())
    dq, dk, dv, ddecay = emu.retention_backward(grad, q, k, v, out, lse,
                                                log_decay, width, True)
    for got, want in zip((dq, dk, dv, ddecay),
                         leaves + [decay]):
        scale = want.grad.abs().max().item() + 1
        assert_close(got.double(), want.grad, rtol=tol, atol=tol * scale)


def _bias(length, width, log_decay):
    """log γ_h · dist as (heads, 1, L, L) for broadcasting over (B, S)."""
    idx = torch.arange(length, dtype=torch.float64)
    if width == 0:
        dist = (idx[:, None] - idx[None, :]).abs()
    else:
        ys, xs = idx // width, idx % width
        dist = ((ys[:, None] - ys[None, :]).abs() +
                (xs[:, None] - xs[None, :]).abs())
    return (log_decay[:, None, None] * dist)[:, None]


# (B, heads, N, M, D, Dv)
EMSA_CASES = [(2, 4, 37, 11, 8, 5), (1, 2, 40, 33, 64, 64), (1, 3, 6, 1, 7, 9)]


@pytest.mark.parametrize('case', EMSA_CASES)
@pytest.mark.parametrize('max_bytes', [48 * 1024, 6 * 1024])
@pytest.mark.parametrize('dtype, tol', [(torch.float64, 1e-12),
                                        (torch.float32, 2e-5)])
def test_emsa_kernels(emu, case, max_bytes, dtype, tol):
    """max_bytes stands for the device's shared memory: small forces tiny
    tiles (many query and key tiles)."""
    bsz, heads, n, m, dim, dv = case
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(bsz, n, heads, dim, generator=gen).transpose(1, 2)
    k = torch.randn(bsz, m, heads, dim, generator=gen).transpose(1, 2)
    v = torch.randn(bsz, m, heads, dv, generator=gen).transpose(1, 2)
    weight = torch.randn(heads, heads, generator=gen) * 0.5
    bias = torch.randn(heads, generator=gen) * 0.1
    q, k, v, weight, bias = [t.to(dtype) for t in (q, k, v, weight, bias)]
    scale = dim**-0.5
    old = emu.set_max_shared_bytes(max_bytes)
    try:
        out, lse, dev2 = emu.emsa_forward(q, k, v, weight, bias, scale, 1e-5)
        grad = torch.randn(out.shape, generator=gen).to(dtype)
        dq, dk, dv_, dweight, _ = emu.emsa_backward(grad, q, k, v, weight,
                                                    bias, out, lse, dev2,
                                                    scale, 1e-5)
    finally:
        emu.set_max_shared_bytes(old)
    leaves = [
        t.detach().double().requires_grad_() for t in (q, k, v, weight, bias)
    ]
    ref = emsa_attention_pytorch(*leaves[:3], scale, *leaves[3:], 1e-5)
    assert_close(out.double(), ref, rtol=tol, atol=tol)
    ref.backward(grad.double())
    for got, want in zip((dq, dk, dv_, dweight), leaves[:4]):
        scale_ = want.grad.abs().max().item() + 1
        assert_close(got.double(), want.grad, rtol=tol, atol=tol * scale_)
