"""Attention backends behind both seams: every backend against the float64
reference, selection (argument, environment, auto), errors, export."""
import re
import warnings

import pytest
import torch
from torch.testing import assert_close

from mmvitmix.ops import _dispatch, backends
from mmvitmix.ops.backends import (BACKENDS, arch_list_covers, check_backend,
                                   requested_backend, resolve_emsa,
                                   resolve_retention)
from mmvitmix.ops.emsa import emsa_attention, emsa_attention_pytorch
from mmvitmix.ops.retention import retention_attention
from tests.test_ops.test_retention import log_decay_for

# (B, heads, H, W, Dk, Dv): odd sizes, batch > 1, one row, one column
SHAPES = [
    (2, 3, 5, 7, 8, 8),
    (1, 2, 1, 9, 16, 16),
    (2, 2, 6, 1, 8, 12),
    (1, 4, 11, 13, 32, 32),
]
TOL = {
    torch.float32: dict(rtol=2e-5, atol=2e-5),
    torch.bfloat16: dict(rtol=4e-2, atol=4e-2),
    torch.float16: dict(rtol=5e-3, atol=5e-3),
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    monkeypatch.delenv(backends.LEGACY_ENV_VAR, raising=False)


def rmt_inputs(shape, dtype=torch.float32, rotary=True, seed=0):
    """Channels-last projections viewed as (B, heads, H, W, D), as RMT."""
    bsz, heads, height, width, dk, dv = shape
    gen = torch.Generator().manual_seed(seed)

    def proj(dim):
        x = torch.randn(bsz, height, width, heads, dim, generator=gen)
        return x.to(dtype).permute(0, 3, 1, 2, 4)

    q, k, v = proj(dk), proj(dk), proj(dv)
    sin = cos = None
    if rotary:
        angle = torch.rand(dk // 2, generator=gen).repeat_interleave(2)
        phase = torch.arange(height * width)[:, None] * angle[None]
        sin = torch.sin(phase).reshape(height, width, dk).to(dtype)
        cos = torch.cos(phase).reshape(height, width, dk).to(dtype)
    return q, k, v, log_decay_for(heads), sin, cos


def run(backend, q, k, v, log_decay, decomposed, sin, cos, grad_out=None):
    q, k, v = (t.detach().requires_grad_(grad_out is not None)
               for t in (q, k, v))
    out = retention_attention(q, k, v, log_decay, decomposed, sin, cos,
                              scale=q.shape[-1]**-0.5, backend=backend)
    if grad_out is None:
        return out.detach(), None
    grads = torch.autograd.grad(out, (q, k, v), grad_out.to(out.dtype))
    return out.detach(), grads


def oracle(q, k, v, log_decay, decomposed, sin, cos, grad_out):
    d = [t.double() if t is not None else None for t in (q, k, v, sin, cos)]
    return run('reference', d[0], d[1], d[2], log_decay.double(), decomposed,
               d[3], d[4], grad_out.double())


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('decomposed', [True, False])
@pytest.mark.parametrize('backend', ['sdpa', 'fused', 'reference'])
def test_retention_backends_match_float64(backend, decomposed, shape):
    q, k, v, log_decay, sin, cos = rmt_inputs(shape)
    grad_out = torch.randn(shape[:4] + (shape[5], ), dtype=torch.float64)
    want, want_grads = oracle(q, k, v, log_decay, decomposed, sin, cos,
                              grad_out)
    got, grads = run(backend, q, k, v, log_decay, decomposed, sin, cos,
                     grad_out)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert_close(got.double(), want, **TOL[torch.float32])
    for name, g, w in zip('qkv', grads, want_grads):
        assert_close(g.double(), w, **TOL[torch.float32], msg=name)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('decomposed', [True, False])
@pytest.mark.parametrize('backend', ['sdpa', 'fused'])
def test_retention_backends_low_precision(backend, decomposed, dtype):
    shape = (2, 2, 5, 6, 16, 16)
    q, k, v, log_decay, sin, cos = rmt_inputs(shape, dtype)
    grad_out = torch.randn(shape[:4] + (16, ), dtype=torch.float64)
    want, want_grads = oracle(q, k, v, log_decay, decomposed, sin, cos,
                              grad_out)
    got, grads = run(backend, q, k, v, log_decay, decomposed, sin, cos,
                     grad_out)
    assert got.dtype == dtype
    assert_close(got.double(), want, **TOL[dtype])
    for g, w in zip(grads, want_grads):
        assert_close(g.double(), w, **TOL[dtype])


@pytest.mark.parametrize('rotary', [True, False])
@pytest.mark.parametrize('backend', ['sdpa', 'fused'])
def test_retention_without_rotary_and_decay_grad(backend, rotary):
    shape = (2, 2, 4, 5, 8, 8)
    q, k, v, log_decay, sin, cos = rmt_inputs(shape, rotary=rotary)
    decay = log_decay.clone().requires_grad_()
    out = retention_attention(q, k, v, decay, True, sin, cos, 0.3,
                              backend=backend)
    (grad, ) = torch.autograd.grad(out.square().sum(), decay)
    d = [t.double() if t is not None else None for t in (q, k, v, sin, cos)]
    decay64 = log_decay.double().requires_grad_()
    ref = retention_attention(d[0], d[1], d[2], decay64, True, d[3], d[4],
                              0.3, backend='reference')
    (ref_grad, ) = torch.autograd.grad(ref.square().sum(), decay64)
    assert_close(out.double(), ref.detach(), rtol=2e-5, atol=2e-5)
    assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # compiles FlexAttention
@pytest.mark.parametrize('decomposed', [True, False])
def test_retention_flex_inference_matches_float64(decomposed):
    pytest.importorskip('torch.nn.attention.flex_attention')
    shape = (2, 2, 5, 7, 16, 16)
    q, k, v, log_decay, sin, cos = rmt_inputs(shape)
    grad_out = torch.zeros(shape[:4] + (16, ), dtype=torch.float64)
    want, _ = oracle(q, k, v, log_decay, decomposed, sin, cos, grad_out)
    with torch.no_grad():
        got, _ = run('flex', q, k, v, log_decay, decomposed, sin, cos)
    assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_flex_training_on_cpu_is_a_clear_error():
    q, k, v, log_decay, sin, cos = rmt_inputs((1, 2, 3, 4, 8, 8))
    q.requires_grad_()
    with pytest.raises(RuntimeError, match='backward on CPU.*use sdpa'):
        retention_attention(q, k, v, log_decay, True, sin, cos,
                            backend='flex')


# ---------------------------------------------------------------- EMSA


def emsa_inputs(mixed, dtype=torch.float32, heads=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    bsz, n, m, d = 2, 23, 7, 8
    q = torch.randn(bsz, n, heads, d, generator=gen).transpose(1, 2)
    k = torch.randn(bsz, heads, m, d, generator=gen)
    v = torch.randn(bsz, heads, m, d, generator=gen)
    weight = torch.randn(heads, heads, generator=gen) if mixed else None
    bias = torch.randn(heads, generator=gen) if mixed else None
    return [t.to(dtype) if t is not None else None
            for t in (q, k, v)] + [weight, bias]


@pytest.mark.parametrize('mixed', [True, False])
@pytest.mark.parametrize('backend', BACKENDS)
def test_emsa_backends_match_float64(backend, mixed):
    q, k, v, weight, bias = emsa_inputs(mixed)
    leaves = [t.requires_grad_() for t in (q, k, v)]
    out = emsa_attention(q, k, v, 0.35, weight, bias, 1e-5, backend=backend)
    grad_out = torch.randn(out.shape, dtype=torch.float64)
    grads = torch.autograd.grad(out, leaves, grad_out.float())
    ref_leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = emsa_attention_pytorch(
        *ref_leaves, 0.35, weight.double() if mixed else None,
        bias.double() if mixed else None, 1e-5)
    ref_grads = torch.autograd.grad(ref, ref_leaves, grad_out)
    assert_close(out.double(), ref.detach(), rtol=2e-5, atol=2e-5)
    for g, w in zip(grads, ref_grads):
        assert_close(g.double(), w, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------ selection


def test_check_backend_lists_the_accepted_values():
    assert check_backend('sdpa') == 'sdpa'
    with pytest.raises(ValueError, match="'fast'.*accepted: 'auto', 'fused', "
                       "'sdpa', 'flex', 'reference'"):
        check_backend('fast')


def test_argument_then_environment_then_auto(monkeypatch):
    assert requested_backend(None) == 'auto'
    monkeypatch.setenv(backends.ENV_VAR, 'reference')
    assert requested_backend(None) == 'reference'
    assert requested_backend('auto') == 'reference'
    assert requested_backend('sdpa') == 'sdpa'
    monkeypatch.setenv(backends.ENV_VAR, 'quick')
    with pytest.raises(ValueError, match='MMVITMIX_ATTN_BACKEND'):
        requested_backend(None)
    monkeypatch.delenv(backends.ENV_VAR)
    monkeypatch.setenv(backends.LEGACY_ENV_VAR, '1')
    assert requested_backend(None) == 'reference'


def test_environment_reaches_the_seam(monkeypatch):
    calls = []

    def stand_in(*args, **kwargs):
        calls.append(args)
        raise RuntimeError('stand-in called')

    monkeypatch.setitem(_dispatch._KERNELS, 'retention', stand_in)
    q, k, v, log_decay, sin, cos = rmt_inputs((1, 2, 3, 4, 8, 8))
    retention_attention(q, k, v, log_decay, True, sin, cos)  # auto: no call
    monkeypatch.setenv(backends.ENV_VAR, 'fused')
    with pytest.raises(RuntimeError, match='stand-in called'):
        retention_attention(q, k, v, log_decay, True, sin, cos)
    assert calls


def test_backbones_validate_attn_backend():
    from mmvitmix.models.backbones import ResT, RMT
    for cls in (RMT, ResT):
        with pytest.raises(ValueError, match='attn_backend.*accepted'):
            cls(attn_backend='triton')


def test_auto_table_covers_every_family():
    for op, families in (('retention', ('decomposed', 'whole')),
                         ('emsa', ('mixed', 'plain'))):
        for device in ('cpu', 'cuda'):
            for family in families:
                for mode in ('infer', 'train'):
                    backends.AUTO_TABLE[(op, device, family, mode)]


def test_auto_falls_back_when_the_extension_is_missing(monkeypatch):
    """auto never picks a kernel that cannot run: one warning, then sdpa."""
    monkeypatch.setattr(_dispatch, '_EXT_LOADED', False)
    monkeypatch.setattr(_dispatch, '_EXT_ERROR', 'simulated: not built')
    monkeypatch.setattr(backends, '_WARNED', set())
    monkeypatch.setitem(backends.AUTO_TABLE,
                        ('retention', 'cpu', 'whole', 'infer'), 'fused')
    monkeypatch.setitem(backends.AUTO_TABLE,
                        ('emsa', 'cpu', 'mixed', 'infer'), 'fused')
    q, k, v, *_ = rmt_inputs((1, 2, 3, 4, 8, 8))
    with pytest.warns(RuntimeWarning, match='simulated: not built'):
        assert resolve_retention(None, q, k, v, False) == 'sdpa'
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # only once
        assert resolve_retention(None, q, k, v, False) == 'sdpa'
    with pytest.raises(RuntimeError, match='fused requested.*simulated'):
        resolve_retention('fused', q, k, v, False)
    with pytest.warns(RuntimeWarning, match='simulated'):
        assert resolve_emsa('auto', q[:, :, 0], k[:, :, 0], v[:, :, 0],
                            True) == 'reference'


@pytest.mark.parametrize('archs, cap, ok', [
    (('8.0', '9.0'), (8, 0), True),
    (('8.0', '9.0'), (8, 6), True),
    (('8.0', '9.0'), (9, 0), True),
    (('8.0', '9.0'), (7, 5), False),   # T4
    (('8.0', '9.0'), (10, 0), False),  # Blackwell
    (('8.0', '9.0+PTX'), (10, 0), True),
    (('9.0a', ), (9, 0), True),
    (('Hopper', ), (9, 0), True),
])
def test_arch_list_covers(archs, cap, ok):
    assert arch_list_covers(archs, cap) is ok


def test_cuda_capability_check_names_the_rebuild(monkeypatch):
    monkeypatch.setattr(_dispatch, 'ext_cuda_archs', lambda: ('8.0', '9.0'))
    monkeypatch.setattr(torch.cuda, 'get_device_capability',
                        lambda index=None: (7, 5))
    backends._cuda_capability_ok.cache_clear()
    try:
        why = backends._cuda_capability_ok(0)
    finally:
        backends._cuda_capability_ok.cache_clear()
    assert '7.5' in why and 'TORCH_CUDA_ARCH_LIST="7.5"' in why


def test_extension_records_its_cuda_archs():
    assert _dispatch.load_ext(), _dispatch.ext_error()
    archs = _dispatch.ext_cuda_archs()
    if _dispatch.ext_with_cuda():
        # what setup.py was given (its default 8.0;9.0), entry by entry
        assert archs, 'the CUDA build recorded no architecture list'
        for arch in archs:
            assert re.fullmatch(r'\d+\.\d+[a-z]?(\+PTX)?', arch), archs
    else:
        assert archs is None


def test_export_and_tracing_use_standard_ops(monkeypatch):
    """Under torch.jit.trace the seams never reach a custom op."""

    def stand_in(*args, **kwargs):
        raise AssertionError('a custom kernel was traced')

    monkeypatch.setitem(_dispatch._KERNELS, 'retention', stand_in)
    monkeypatch.setitem(_dispatch._KERNELS, 'emsa', stand_in)
    q, k, v, log_decay, sin, cos = rmt_inputs((1, 2, 3, 4, 8, 8))
    fn = (lambda q, k, v: retention_attention(
        q, k, v, log_decay, True, sin, cos, 0.5, backend='fused'))
    traced = torch.jit.trace(fn, (q, k, v), check_trace=False)
    graph = str(traced.graph)
    assert 'mmvitmix::' not in graph
    assert 'scaled_dot_product_attention' in graph
    assert_close(traced(q, k, v),
                 retention_attention(q, k, v, log_decay, True, sin, cos, 0.5,
                                     backend='reference'),
                 rtol=1e-5, atol=1e-5)
    eq, ek, ev, weight, bias = emsa_inputs(True)
    traced = torch.jit.trace(
        lambda q, k, v: emsa_attention(q, k, v, 0.3, weight, bias,
                                       backend='fused'), (eq, ek, ev),
        check_trace=False)
    assert 'mmvitmix::' not in str(traced.graph)


def test_auto_on_cpu_follows_the_recorded_table():
    q, k, v, *_ = rmt_inputs((1, 2, 3, 4, 8, 8))
    for decomposed, family in ((True, 'decomposed'), (False, 'whole')):
        with torch.no_grad():
            assert resolve_retention(None, q, k, v, decomposed) == \
                backends.AUTO_TABLE[('retention', 'cpu', family, 'infer')]
        leaf = q.clone().requires_grad_()
        assert resolve_retention(None, leaf, k, v, decomposed) == \
            backends.AUTO_TABLE[('retention', 'cpu', family, 'train')]


def test_auto_never_picks_flex_for_cpu_training(monkeypatch):
    monkeypatch.setitem(backends.AUTO_TABLE,
                        ('retention', 'cpu', 'whole', 'train'), 'flex')
    q, k, v, *_ = rmt_inputs((1, 2, 3, 4, 8, 8))
    assert resolve_retention(None, q.requires_grad_(), k, v, False) == 'sdpa'


@pytest.mark.parametrize('paired', [True, False])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_sdpa_rotary_paired_and_general_tables(paired, dtype):
    """RMT's tables come in equal pairs and take the complex-product rotary;
    any other (H, W, Dk) table takes the general formula. Both equal the
    reference's theta_shift."""
    from mmvitmix.ops import retention
    shape = (2, 2, 5, 6, 8, 8)
    q, k, v, log_decay, sin, cos = rmt_inputs(shape, dtype)
    if not paired:
        gen = torch.Generator().manual_seed(3)
        sin = torch.rand(sin.shape, generator=gen).to(dtype)
        cos = torch.rand(cos.shape, generator=gen).to(dtype)
    assert (retention.rotary_pairs(sin, cos) is not None) == paired
    grad_out = torch.randn(2, 2, 5, 6, 8, dtype=dtype)
    want, want_grads = oracle(q, k, v, log_decay, True, sin, cos, grad_out)
    got, grads = run('sdpa', q, k, v, log_decay, True, sin, cos, grad_out)
    tol = TOL.get(dtype, dict(rtol=1e-10, atol=1e-10))
    assert_close(got.double(), want, **tol)
    for g, w in zip(grads, want_grads):
        assert_close(g.double(), w, **tol)


def test_overwrite_qk_only_without_autograd():
    """overwrite_qk lets the seam rotate q and k in place when no graph is
    recorded (RMT's fresh projections); the result is the same, and with
    autograd the inputs are left alone."""
    q, k, v, log_decay, sin, cos = rmt_inputs((1, 2, 4, 5, 8, 8))
    want = retention_attention(q, k, v, log_decay, True, sin, cos, 0.3,
                               backend='sdpa')
    q1, k1 = q.clone(), k.clone()
    with torch.no_grad():
        got = retention_attention(q1, k1, v, log_decay, True, sin, cos, 0.3,
                                  backend='sdpa', overwrite_qk=True)
    assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert not torch.equal(q1, q)  # rotated in place
    q2 = q.clone().requires_grad_()
    got = retention_attention(q2, k, v, log_decay, True, sin, cos, 0.3,
                              backend='sdpa', overwrite_qk=True)
    assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert torch.equal(q2.detach(), q)


@pytest.mark.parametrize('grad', [True, False])
def test_emsa_centred_is_the_reference_float64(grad):
    """The sdpa path of head-mixed EMSA (bias cancelled by the softmax,
    scale in the mixing weight, σ applied to the output, centring in place
    without autograd) equals the reference in float64, with the mixing
    bias' gradient present and zero."""
    from mmvitmix.ops.emsa import emsa_attention_centred
    q, k, v, weight, bias = (t.double()
                             for t in emsa_inputs(True, heads=4, seed=5))
    weight.requires_grad_(grad)
    bias.requires_grad_(grad)
    leaves = [t.requires_grad_(grad) for t in (q, k, v)]
    with torch.set_grad_enabled(grad):
        got = emsa_attention_centred(q, k, v, 0.35, weight, bias, 1e-5)
        want = emsa_attention_pytorch(q, k, v, 0.35, weight, bias, 1e-5)
    assert_close(got, want, rtol=1e-12, atol=1e-12)
    if grad:
        grad_out = torch.randn_like(want)
        params = leaves + [weight, bias]
        g_got = torch.autograd.grad(got, params, grad_out)
        g_want = torch.autograd.grad(want, params, grad_out)
        for a, b in zip(g_got, g_want):
            assert_close(a, b, rtol=1e-10, atol=1e-10)
        assert torch.count_nonzero(g_got[-1]) == 0


def test_emsa_flex_runs_the_sdpa_path_with_one_warning(monkeypatch):
    monkeypatch.setattr(backends, '_WARNED', set())
    q, k, v, weight, bias = emsa_inputs(True)
    with pytest.warns(RuntimeWarning, match='FlexAttention cannot express'):
        assert resolve_emsa('flex', q, k, v, True) == 'sdpa'
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert resolve_emsa('sdpa', q, k, v, True) == 'sdpa'
        assert resolve_emsa('flex', q, k, v, True) == 'sdpa'
