"""The fused EMSA op (torch.ops.mmvitmix.emsa_*) vs the reference.

On the CPU the op runs the CUDA host code and kernels emulated on the host
(the ``host_kernels`` fixture, tests/test_ops/cuda_emulation); on a GPU the
same checks run against the compiled kernels (``requires_cuda``).
"""
import pytest
import torch
from torch.testing import assert_close

from mmvitmix.ops.backends import fused
from mmvitmix.ops.emsa import emsa_attention, emsa_attention_pytorch

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason='no CUDA device visible')


@pytest.fixture(autouse=True)
def _kernels(host_kernels):
    return host_kernels


_FUSED = fused.emsa  # tests may replace fused.emsa with a stand-in


def _emsa_fused(q, k, v, scale, weight, bias=None, eps=1e-5):
    return _FUSED(q, k, v, scale, weight, bias, eps)


def make_inputs(case, dtype=torch.float32, seed=0):
    """q, k, v in ResT's strided layouts (token-major projections)."""
    bsz, heads, n, m, dim, dv = case
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(bsz, n, heads, dim, generator=gen).transpose(1, 2)
    k = torch.randn(bsz, m, heads, dim, generator=gen).transpose(1, 2)
    v = torch.randn(bsz, m, heads, dv, generator=gen).transpose(1, 2)
    weight = torch.randn(heads, heads, generator=gen) * 0.5
    bias = torch.randn(heads, generator=gen) * 0.1
    return [t.to(dtype) for t in (q, k, v, weight, bias)]


# (B, heads, N, M, D, Dv): ResT-like (D=64) and odd sizes, more than one
# key block (64) and query block (16), a single key
CASES = [
    (2, 4, 37, 11, 8, 5),
    (1, 2, 100, 70, 64, 64),
    (3, 8, 20, 130, 16, 16),
    (1, 3, 17, 1, 7, 9),
]


def run_with_grads(fn, inputs, grad_seed=3):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    q, k, v, weight, bias = leaves
    out = fn(q, k, v, q.shape[-1]**-0.5, weight, bias, 1e-5)
    gen = torch.Generator().manual_seed(grad_seed)
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    out.backward(grad.to(device=out.device, dtype=out.dtype))
    return out, [t.grad for t in leaves]


def test_identity_mean_one_over_m():
    """The identity the kernel exploits, in float64 on the reference."""
    q, k, v, weight, bias = make_inputs((2, 4, 13, 9, 8, 6), torch.float64)
    scale = 8**-0.5
    logits = torch.einsum('hg,bgnm->bhnm', weight,
                          q @ k.transpose(-1, -2) * scale)
    prob = (logits + bias[None, :, None, None]).softmax(-1)
    assert_close(
        prob.mean((-2, -1)),
        torch.full((2, 4), 1 / 9, dtype=torch.float64),
        rtol=0,
        atol=1e-15)
    sigma = ((prob**2).mean((-2, -1), keepdim=True) - 1 / 81 + 1e-5).sqrt()
    out = (prob @ v - v.mean(-2, keepdim=True)) / sigma
    ref = emsa_attention_pytorch(q, k, v, scale, weight, bias, 1e-5)
    assert_close(out, ref, rtol=1e-12, atol=1e-12)


# a single key (M = 1) gives a constant map: out and every gradient are 0
# and 1/σ = eps^-1/2 only amplifies rounding, so it is checked in float64
@pytest.mark.parametrize('case, dtype',
                         [(c, torch.float64) for c in CASES] +
                         [(c, torch.float32) for c in CASES if c[3] > 1])
def test_forward_backward_match_reference(case, dtype):
    inputs = make_inputs(case, dtype)
    out, grads = run_with_grads(_emsa_fused, inputs)
    ref_inputs = [t.double() for t in inputs]
    ref, ref_grads = run_with_grads(emsa_attention_pytorch, ref_inputs)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    assert out.dtype == dtype
    # the output is scaled by 1/σ (values of tens): tolerances relative to it
    out_scale = ref.abs().max().item()
    assert_close(out.double(), ref, rtol=tol, atol=tol * out_scale)
    # the output is token-major: (B, N, heads·Dv) without a copy
    assert out.transpose(1, 2).is_contiguous()
    names = ('q', 'k', 'v', 'weight', 'bias')
    for name, got, want in zip(names, grads, ref_grads):
        scale = want.abs().max().item() + 1
        assert_close(
            got.double(), want, rtol=tol, atol=tol * scale, msg=name)


def test_bias_gradient_is_exactly_zero():
    """b_h shifts every logit of a softmax row alike."""
    _, grads = run_with_grads(_emsa_fused,
                              make_inputs((2, 3, 9, 5, 4, 4), torch.float64))
    assert torch.equal(grads[4], torch.zeros(3, dtype=torch.float64))


@pytest.mark.slow  # float64 gradcheck (about 10 s)
def test_gradcheck_float64():
    inputs = make_inputs((2, 3, 5, 4, 3, 2), torch.float64)
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(
        lambda q, k, v, w, b: _emsa_fused(q, k, v, 3**-0.5, w, b, 1e-5),
        leaves)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_reduced_precision_cpu(dtype):
    inputs = make_inputs((2, 4, 33, 20, 16, 16), dtype)
    out, grads = run_with_grads(_emsa_fused, inputs)
    assert out.dtype == dtype
    ref, ref_grads = run_with_grads(emsa_attention_pytorch,
                                    [t.float() for t in inputs])
    assert_close(out.float(), ref, rtol=3e-2, atol=3e-2)
    for got, want in zip(grads[:4], ref_grads[:4]):
        scale = want.abs().max().item()
        assert_close(got.float(), want, rtol=5e-2, atol=5e-2 * scale)


def test_dispatch_and_no_transform_path(monkeypatch):
    q, k, v, weight, bias = make_inputs((1, 2, 10, 6, 8, 8))
    got = emsa_attention(q, k, v, 8**-0.5, weight, bias, backend='fused')
    # without head mixing the seam runs plain softmax attention (SDPA)
    plain = emsa_attention(q, k, v, 8**-0.5)
    assert_close(plain, (q @ k.transpose(-1, -2) * 8**-0.5).softmax(-1) @ v)

    def no_kernel(*args, **kwargs):
        raise AssertionError('the fused kernel was asked for')

    monkeypatch.setenv('MMVITMIX_ATTN_BACKEND', 'reference')
    monkeypatch.setattr(fused, 'emsa', no_kernel)
    ref = emsa_attention(q, k, v, 8**-0.5, weight, bias)
    assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # bias None: a zero bias
    assert_close(
        _emsa_fused(q, k, v, 8**-0.5, weight, None),
        emsa_attention_pytorch(q, k, v, 8**-0.5, weight, None),
        rtol=1e-5,
        atol=1e-5)


@pytest.mark.parametrize('bad, match', [
    (dict(weight=torch.zeros(3, 3)), r'weight must be \(2, 2\)'),
    (dict(bias=torch.zeros(3)), 'bias must have 2 entries'),
    (dict(k=torch.zeros(1, 2, 6, 5)), 'k shape'),
    (dict(v=torch.zeros(1, 2, 5, 8)), 'v shape'),
    (dict(k=torch.zeros(1, 2, 0, 8), v=torch.zeros(1, 2, 0, 8)),
     r'at least one key'),
    (dict(q=torch.zeros(1, 2, 10, 8, dtype=torch.float64)),
     'must share a dtype'),
    (dict(eps=-1.0), 'eps must be >= 0'),
])
def test_bad_inputs_raise_clear_errors(bad, match):
    args = dict(
        q=torch.zeros(1, 2, 10, 8),
        k=torch.zeros(1, 2, 6, 8),
        v=torch.zeros(1, 2, 6, 8),
        weight=torch.zeros(2, 2),
        bias=torch.zeros(2),
        scale=1.0,
        eps=1e-5)
    args.update(bad)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.mmvitmix.emsa_forward(**args)


def test_torch_compile_and_opcheck():
    inputs = make_inputs((2, 2, 9, 5, 8, 8))
    leaves = [t.detach().clone().requires_grad_() for t in inputs]

    def core(q, k, v, weight, bias):
        return emsa_attention(q, k, v, 8**-0.5, weight, bias,
                              backend='fused').sum(-1)

    torch._dynamo.reset()
    compiled = torch.compile(core, backend='aot_eager', fullgraph=True)
    out = compiled(*leaves)
    grads = torch.autograd.grad(out.sum(), leaves[:4])
    ref_leaves = [t.detach().clone().requires_grad_() for t in inputs]
    ref = core(*ref_leaves)
    ref_grads = torch.autograd.grad(ref.sum(), ref_leaves[:4])
    assert_close(out, ref)
    for got, want in zip(grads, ref_grads):
        assert_close(got, want)

    torch.library.opcheck(torch.ops.mmvitmix.emsa_forward.default,
                          (*leaves, 8**-0.5, 1e-5))
    q, k, v, weight, bias = inputs
    out, lse, dev2 = torch.ops.mmvitmix.emsa_forward(q, k, v, weight, bias,
                                                      8**-0.5, 1e-5)
    torch.library.opcheck(
        torch.ops.mmvitmix.emsa_backward.default,
        (torch.ones_like(out), q, k, v, weight, bias, out, lse, dev2,
         8**-0.5, 1e-5),
        test_utils=('test_schema', 'test_faketensor'))


@requires_cuda
@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('dtype, tol', [(torch.float32, 1e-4),
                                        (torch.float16, 1e-2),
                                        (torch.bfloat16, 5e-2)])
def test_cuda_matches_reference(case, dtype, tol):
    inputs = make_inputs(case, dtype)
    out, grads = run_with_grads(_emsa_fused, [t.cuda() for t in inputs])
    assert out.is_cuda and out.dtype == dtype
    ref, ref_grads = run_with_grads(emsa_attention_pytorch,
                                    [t.double() for t in inputs])
    assert_close(out.double().cpu(), ref, rtol=tol, atol=tol)
    for got, want in zip(grads, ref_grads):
        scale = want.abs().max().item() + 1
        assert_close(got.double().cpu(), want, rtol=tol, atol=tol * scale)
