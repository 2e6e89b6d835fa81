"""FLOP formulas of the attention seams (mmvitmix.ops.flops) against hand
counts, for every backend, under mmengine's FlopAnalyzer (one per
multiply-add) and torch.utils.flop_counter (two per multiply-add)."""
import warnings

import pytest
import torch
from mmengine.analysis import FlopAnalyzer
from torch.utils.flop_counter import FlopCounterMode

from mmvitmix.ops import flops
from mmvitmix.ops.emsa import emsa_attention
from mmvitmix.ops.retention import retention_attention
B, HEADS, H, W, D = 1, 2, 4, 6, 8
# hand counts (multiply-adds): q·kᵀ and P·v, Dk = Dv = 8
# decomposed: W pass H rows of W tokens, then H pass W columns of H tokens
DECOMPOSED = B * HEADS * (H * W * W + W * H * H) * (D + D)  # 7680
WHOLE = B * HEADS * (H * W)**2 * (D + D)  # 18432
N, M = 10, 5
EMSA_PLAIN = 2 * 3 * N * M * (8 + 8)  # B=2, heads=3: 4800
EMSA_MIXED = EMSA_PLAIN + 2 * 3 * 3 * N * M  # + 1x1 mixing: 5700


def test_hand_counts_of_the_formulas():
    assert DECOMPOSED == 7680 and WHOLE == 18432
    assert flops.retention_macs((1, 2, 1, 24, 8), (1, 2, 1, 24, 8),
                                (1, 2, 1, 24, 8)) == WHOLE
    assert flops.emsa_macs((2, 3, N, 8), (2, 3, M, 8), (2, 3, M, 8),
                           mixed=False) == EMSA_PLAIN
    assert flops.emsa_macs((2, 3, N, 8), (2, 3, M, 8), (2, 3, M, 8),
                           mixed=True) == EMSA_MIXED
    assert flops.sdpa_macs((2, 3, 7, 4), (2, 3, 9, 4), (2, 3, 9, 5)) == \
        2 * 3 * 7 * 9 * (4 + 5)


class _Retention(torch.nn.Module):

    def __init__(self, backend, decomposed):
        super().__init__()
        self.backend, self.decomposed = backend, decomposed
        self.register_buffer('log_decay', -torch.rand(HEADS) - 0.1)
        self.register_buffer('sin', torch.rand(H, W, D))
        self.register_buffer('cos', torch.rand(H, W, D))

    def forward(self, q, k, v):
        return retention_attention(
            q, k, v, self.log_decay, self.decomposed, self.sin, self.cos,
            D**-0.5, backend=self.backend)


class _Emsa(torch.nn.Module):

    def __init__(self, backend, mixed):
        super().__init__()
        self.backend = backend
        self.weight = torch.nn.Parameter(torch.randn(3, 3)) if mixed else None
        self.bias = torch.nn.Parameter(torch.randn(3)) if mixed else None

    def forward(self, q, k, v):
        return emsa_attention(q, k, v, 0.3, self.weight, self.bias,
                              backend=self.backend)


def _mmengine(model, inputs):
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        analyzer = FlopAnalyzer(model, inputs)
        analyzer.unsupported_ops_warnings(False)
        return analyzer.total()


def _torch(model, inputs):
    flops.register_torch_formulas(load_ext=True)
    mode = FlopCounterMode(display=False)
    with torch.no_grad(), mode:
        model(*inputs)
    return mode.get_total_flops()


@pytest.fixture(autouse=True)
def _kernels(host_kernels):
    """'fused' counted through the CUDA ops' host code (emulated)."""
    return host_kernels


def _backends(counter):
    out = ['reference', 'sdpa', 'auto', 'fused']
    if counter == 'mmengine':
        out.append('flex')  # traced: gives way to sdpa, must still count
    return out


def _qkv(*shapes):
    torch.manual_seed(0)
    return tuple(torch.randn(*s) for s in shapes)


@pytest.mark.parametrize('counter', ['mmengine', 'torch'])
@pytest.mark.parametrize('decomposed', [True, False])
def test_retention_every_backend_counts_the_reference(counter, decomposed):
    inputs = _qkv(*[(B, HEADS, H, W, D)] * 3)
    expect = DECOMPOSED if decomposed else WHOLE
    unit = 1 if counter == 'mmengine' else 2
    count = _mmengine if counter == 'mmengine' else _torch
    got = {b: count(_Retention(b, decomposed), inputs)
           for b in _backends(counter)}
    assert got == {b: unit * expect for b in got}, got


@pytest.mark.parametrize('counter', ['mmengine', 'torch'])
@pytest.mark.parametrize('mixed', [True, False])
def test_emsa_every_backend_counts_the_reference(counter, mixed):
    inputs = _qkv((2, 3, N, 8), (2, 3, M, 8), (2, 3, M, 8))
    expect = EMSA_MIXED if mixed else EMSA_PLAIN
    unit = 1 if counter == 'mmengine' else 2
    count = _mmengine if counter == 'mmengine' else _torch
    backends = [b for b in _backends(counter) if mixed or b != 'fused']
    got = {b: count(_Emsa(b, mixed), inputs) for b in backends}
    assert got == {b: unit * expect for b in got}, got
