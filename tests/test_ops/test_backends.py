"""Attention backends behind both seams: every backend against the float64
reference, selection (argument, environment, auto), errors, export."""
import re
import warnings

import pytest
import torch
from torch.testing import assert_close

from mmvitmix.ops import backends, extension, rotary
from mmvitmix.ops.backends import (BACKENDS, check_backend, choose, common,
                                   fused, requested_backend)
from mmvitmix.ops.backends.fused import arch_list_covers
from mmvitmix.ops.emsa import emsa_attention, emsa_attention_pytorch
from mmvitmix.ops.retention import retention_attention
from mmvitmix.testing import (emsa_inputs, retention_float64, rmt_inputs,
                              run_retention)

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


@pytest.fixture
def ready(request):
    """``ready(backend)``: for 'fused', the CUDA ops' host code registered
    as their CPU kernels (tests/test_ops/cuda_emulation) for this test."""

    def prepare(backend):
        if backend == 'fused':
            request.getfixturevalue('host_kernels')

    return prepare


run = run_retention


def oracle(q, k, v, log_decay, decomposed, sin, cos, grad_out):
    return retention_float64(q, k, v, log_decay, decomposed, sin, cos,
                             grad_out)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('decomposed', [True, False])
@pytest.mark.parametrize('backend', ['sdpa', 'fused', 'reference'])
def test_retention_backends_match_float64(backend, decomposed, shape,
                                          ready):
    ready(backend)
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
def test_retention_backends_low_precision(backend, decomposed, dtype, ready):
    ready(backend)
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
def test_retention_without_rotary_and_decay_grad(backend, rotary, ready):
    ready(backend)
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


@pytest.mark.parametrize('mixed', [True, False])
@pytest.mark.parametrize('backend', BACKENDS)
def test_emsa_backends_match_float64(backend, mixed, ready):
    ready(backend)
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


def test_environment_reaches_the_seam(monkeypatch, host_kernels):
    calls = []

    def stand_in(*args, **kwargs):
        calls.append(args)
        raise RuntimeError('stand-in called')

    monkeypatch.setattr(fused, 'retention', stand_in)
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
    """Every (op, device, family, mode) auto can meet has an entry, naming a
    backend; EMSA without head mixing never consults the table."""
    for op, families in (('retention', ('decomposed', 'whole')),
                         ('emsa', ('mixed', ))):
        for device in ('cpu', 'cuda'):
            for family in families:
                for mode in ('infer', 'train'):
                    choice = backends.AUTO_TABLE[(op, device, family, mode)]
                    assert choice in backends.MODULES, choice
    q, k, v, *_ = emsa_inputs(False)
    for requested in BACKENDS[:-1]:
        assert choose('emsa', requested, q, k, v, 'plain').NAME == 'sdpa'
    assert choose('emsa', 'reference', q, k, v, 'plain').NAME == 'reference'


def test_auto_skips_a_backend_that_cannot_run(monkeypatch):
    """auto never picks a backend that cannot take the inputs: one warning,
    then the next of AUTO_FALLBACK."""
    monkeypatch.setattr(extension, '_EXT_LOADED', False)
    monkeypatch.setattr(extension, '_EXT_ERROR', 'simulated: not built')
    monkeypatch.setattr(common, '_WARNED', set())
    monkeypatch.setitem(backends.AUTO_TABLE,
                        ('retention', 'cpu', 'whole', 'infer'), 'fused')
    q, k, v, *_ = rmt_inputs((1, 2, 3, 4, 8, 8))
    with pytest.warns(RuntimeWarning, match='simulated: not built'):
        assert choose('retention', None, q, k, v, 'whole').NAME == 'sdpa'
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # only once
        assert choose('retention', None, q, k, v, 'whole').NAME == 'sdpa'
    with pytest.raises(RuntimeError, match="'fused' cannot run.*simulated"):
        choose('retention', 'fused', q, k, v, 'whole')


@pytest.mark.parametrize('op', ['retention', 'emsa'])
def test_fused_on_cpu_is_a_clear_error(op):
    """The fused kernels are CUDA-only: asking for them on CPU tensors names
    the reason and the backends that run there."""
    message = (r"attn_backend='fused' cannot run this \w+ call on cpu "
               r"float32 tensors: the fused kernels run on CUDA GPUs only, "
               r"not on cpu tensors\. Backends that can: 'auto', 'sdpa', "
               r"(?:'flex', )?'reference'")
    if op == 'retention':
        q, k, v, log_decay, sin, cos = rmt_inputs((1, 2, 3, 4, 8, 8))
        call = lambda: retention_attention(  # noqa: E731
            q, k, v, log_decay, True, sin, cos, backend='fused')
    else:
        q, k, v, weight, bias = emsa_inputs(True)
        call = lambda: emsa_attention(  # noqa: E731
            q, k, v, 0.3, weight, bias, backend='fused')
    with pytest.raises(RuntimeError, match=message):
        call()
    from mmvitmix.models.backbones import RMT
    model = RMT(arch='t', attn_backend='fused').eval()
    with pytest.raises(RuntimeError, match="'fused' cannot run.*CUDA GPUs"):
        with torch.no_grad():
            model(torch.zeros(1, 3, 32, 32))


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
    monkeypatch.setattr(extension, 'ext_cuda_archs', lambda: ('8.0', '9.0'))
    monkeypatch.setattr(torch.cuda, 'get_device_capability',
                        lambda index=None: (7, 5))
    fused._cuda_capability_unsupported.cache_clear()
    try:
        why = fused._cuda_capability_unsupported(0)
    finally:
        fused._cuda_capability_unsupported.cache_clear()
    assert '7.5' in why and 'TORCH_CUDA_ARCH_LIST="7.5"' in why


def test_extension_records_its_cuda_archs():
    assert extension.load_ext(), extension.ext_error()
    archs = extension.ext_cuda_archs()
    if extension.ext_with_cuda():
        # what setup.py was given (its default 8.0;9.0), entry by entry
        assert archs, 'the CUDA build recorded no architecture list'
        for arch in archs:
            assert re.fullmatch(r'\d+\.\d+[a-z]?(\+PTX)?', arch), archs
    else:
        assert archs is None


def test_export_and_tracing_use_standard_ops(monkeypatch, host_kernels):
    """Under torch.jit.trace the seams never reach a custom op, even where
    the fused kernels could run."""

    def stand_in(*args, **kwargs):
        raise AssertionError('a custom kernel was traced')

    monkeypatch.setattr(fused, 'retention', stand_in)
    monkeypatch.setattr(fused, 'emsa', stand_in)
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
            assert choose('retention', None, q, k, v, family).NAME == \
                backends.AUTO_TABLE[('retention', 'cpu', family, 'infer')]
        leaf = q.clone().requires_grad_()
        assert choose('retention', None, leaf, k, v, family).NAME == \
            backends.AUTO_TABLE[('retention', 'cpu', family, 'train')]


def test_auto_never_picks_flex_for_cpu_training(monkeypatch):
    monkeypatch.setitem(backends.AUTO_TABLE,
                        ('retention', 'cpu', 'whole', 'train'), 'flex')
    q, k, v, *_ = rmt_inputs((1, 2, 3, 4, 8, 8))
    with pytest.warns(RuntimeWarning, match='backward on CPU'):
        module = choose('retention', None, q.requires_grad_(), k, v, 'whole')
    assert module.NAME == 'sdpa'


@pytest.mark.parametrize('paired', [True, False])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_sdpa_rotary_paired_and_general_tables(paired, dtype):
    """RMT's tables come in equal pairs and take the complex-product rotary;
    any other (H, W, Dk) table takes the general formula. Both equal the
    reference's theta_shift."""
    shape = (2, 2, 5, 6, 8, 8)
    q, k, v, log_decay, sin, cos = rmt_inputs(shape, dtype)
    if not paired:
        gen = torch.Generator().manual_seed(3)
        sin = torch.rand(sin.shape, generator=gen).to(dtype)
        cos = torch.rand(cos.shape, generator=gen).to(dtype)
    assert (rotary.rotary_pairs(sin, cos) is not None) == paired
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
    monkeypatch.setattr(common, '_WARNED', set())
    q, k, v, weight, bias = emsa_inputs(True)
    with pytest.warns(RuntimeWarning, match='FlexAttention cannot express'):
        assert choose('emsa', 'flex', q, k, v, 'mixed').NAME == 'sdpa'
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert choose('emsa', 'sdpa', q, k, v, 'mixed').NAME == 'sdpa'
        assert choose('emsa', 'flex', q, k, v, 'mixed').NAME == 'sdpa'


def test_rotary_gradient_in_the_projection_layout():
    """RMT's q and k are (B, heads, H, W, D) views of (B, H, W, C)
    projections. The complex rotary's gradient comes back in that layout
    and equals the real formula's (float64), so the view's backward needs
    no copy."""
    gen = torch.Generator().manual_seed(0)
    proj = torch.randn(2, 4, 5, 3, 8, generator=gen, dtype=torch.float64,
                       requires_grad=True)
    x = proj.permute(0, 3, 1, 2, 4)
    angle = torch.randn(4, 5, 4, generator=gen,
                        dtype=torch.float64).repeat_interleave(2, -1)
    sin, cos = angle.sin(), angle.cos()
    rotation = rotary.rotary_pairs(sin, cos)
    out = rotary._shift_complex(x, rotation, inplace=False)
    assert type(out.grad_fn).__name__ == '_ComplexShiftBackward'
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad(out, x, grad)[0]
    want_out = rotary.theta_shift(x, sin, cos)
    want = torch.autograd.grad(want_out, x, grad)[0]
    assert_close(out, want_out, rtol=1e-12, atol=1e-12)
    assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert got.stride() == x.stride()
