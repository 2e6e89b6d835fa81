"""RMT and ResT: every attention backend equals the reference path (tiny
archs; the fused kernels emulated on the host, tests/test_ops/cuda_emulation).
"""
import copy

import pytest
import torch
from torch.testing import assert_close

from mmvitmix.models.backbones.rest import ResT
from mmvitmix.models.backbones.rmt import RMT
from tests.utils import tiny_arch



@pytest.fixture(autouse=True)
def _kernels(host_kernels):
    return host_kernels


def outputs_and_grads(model, x):
    outs = model(x)
    loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum()
               for o in outs)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params)
    return [o.detach() for o in outs], grads


@pytest.mark.slow  # real-size backbones, every backend, fwd + bwd
@pytest.mark.parametrize('backend', ['fused', 'sdpa', 'auto'])
@pytest.mark.parametrize('build', [
    lambda: RMT(arch=tiny_arch('RMT'), drop_path_rate=0.),
    lambda: ResT(arch=tiny_arch('ResT'), drop_path_rate=0.),
],
                         ids=['rmt', 'rest'])
def test_backend_equals_reference(build, backend, monkeypatch):
    """Outputs and parameter gradients as accurate as the reference's.

    Some of them are ill-conditioned (ResT's InstanceNorm divides by
    σ ≈ sqrt(eps) when maps are near uniform, and several true gradients are
    exactly 0), so both float32 paths are compared with a float64 run and
    the backend may not be more than 4× further from it than the
    reference is (plus 1e-6 of the gradient's scale); an exactly-zero
    gradient, pure rounding on both paths, not more than 4× the largest
    such rounding of the reference.
    """
    torch.manual_seed(0)
    model = build()
    # odd input size: 57×43 -> stage grids of 15×11 down to 2×2
    x = torch.randn(1, 3, 57, 43)
    monkeypatch.setenv('MMVITMIX_ATTN_BACKEND', backend)
    fused_outs, fused_grads = outputs_and_grads(model, x)
    monkeypatch.setenv('MMVITMIX_ATTN_BACKEND', 'reference')
    ref_outs, ref_grads = outputs_and_grads(model, x)
    exact_outs, exact_grads = outputs_and_grads(
        copy.deepcopy(model).double(), x.double())
    names = [f'out{i}' for i in range(len(exact_outs))] + [
        n for n, p in model.named_parameters() if p.requires_grad
    ]
    rows = []
    for name, got, ref, exact in zip(names, fused_outs + list(fused_grads),
                                     ref_outs + list(ref_grads),
                                     exact_outs + list(exact_grads)):
        rows.append((name, (got.double() - exact).abs().max().item(),
                     (ref.double() - exact).abs().max().item(),
                     exact.abs().max().item()))
    # gradients that are exactly zero (a conv bias before BatchNorm): in
    # float32 they are the rounding of a cancelling sum on every path, so
    # they are held to the largest such rounding the reference makes
    zero_noise = max([ref for _, _, ref, scale in rows if scale < 1e-10],
                     default=0.)
    for name, fused_err, ref_err, scale in rows:
        floor = zero_noise if scale < 1e-10 else ref_err
        bound = 4 * floor + 1e-6 * scale
        assert fused_err <= bound, (name, fused_err, ref_err)


@pytest.mark.parametrize('backend', ['fused', 'sdpa'])
def test_rmt_under_cpu_autocast(backend, monkeypatch):
    """bfloat16 autocast: mixed q/k/v dtypes reach every backend."""
    torch.manual_seed(0)
    model = RMT(arch=tiny_arch('RMT'), drop_path_rate=0.).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        monkeypatch.setenv('MMVITMIX_ATTN_BACKEND', backend)
        fused = model(x)
        monkeypatch.setenv('MMVITMIX_ATTN_BACKEND', 'reference')
        ref = model(x)
    for got, want in zip(fused, ref):
        assert got.dtype == want.dtype
        assert_close(got.float(), want.float(), rtol=5e-2, atol=5e-2)
