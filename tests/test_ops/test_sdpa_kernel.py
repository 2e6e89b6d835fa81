"""The SDPA backend reaches torch's flash kernel on the CPU.

torch's ``scaled_dot_product_attention`` takes its flash kernel on the CPU
only for some mask shapes: a 3-D (heads, L, L) decay mask sends it to the
math path (explicit matmul, softmax and masking), 3.8x slower for RMT-T's
whole-attention stage at 800x1344 (docs/benchmarks.md). This holds the
retention's SDPA backend, whole and decomposed, forward and backward, to the
flash kernel, so that a change of mask layout cannot silently lose it.
"""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from mmvitmix.ops.retention import retention_attention
from mmvitmix.testing import log_decay_for

FLASH = 'aten::_scaled_dot_product_flash_attention_for_cpu'


@pytest.mark.parametrize('decomposed', [False, True])
def test_retention_sdpa_runs_the_flash_kernel(decomposed):
    torch.manual_seed(0)
    heads, h, w, d = 4, 6, 7, 16
    q, k, v = (torch.randn(2, heads, h, w, d, requires_grad=True)
               for _ in range(3))
    log_decay = log_decay_for(heads)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = retention_attention(
            q, k, v, log_decay, decomposed, scale=d**-0.5, backend='sdpa')
        out.square().sum().backward()
    names = {e.key for e in prof.key_averages()}
    calls = 2 if decomposed else 1
    counts = {e.key: e.count for e in prof.key_averages()}
    assert counts.get(FLASH) == calls, sorted(names)
    assert counts.get(FLASH + '_backward') == calls, sorted(names)
    # the math path's pieces are absent
    assert 'aten::_softmax' not in names and 'aten::bmm' not in names, \
        sorted(names)
