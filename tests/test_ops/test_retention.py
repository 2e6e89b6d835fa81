"""The fused retention op (torch.ops.mmvitmix.retention_*) vs the reference.

On the CPU the op runs the CUDA host code and kernels emulated on the host
(the ``host_kernels`` fixture, tests/test_ops/cuda_emulation); on a GPU the
same checks run against the compiled kernels (``requires_cuda``).
"""
import pytest
import torch
from torch.testing import assert_close

from mmvitmix.ops.backends import fused
from mmvitmix.ops.backends.fused import retention_op as _retention_fused
from mmvitmix.ops.retention import (retention_1d, retention_1d_pytorch,
                                    retention_2d, retention_2d_pytorch,
                                    retention_attention)
from mmvitmix.ops.rotary import theta_shift
from mmvitmix.testing import log_decay_for

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason='no CUDA device visible')


@pytest.fixture(autouse=True)
def _kernels(host_kernels):
    return host_kernels


def reference_5d(q, k, v, log_decay, width):
    """The plain-PyTorch reference on 5-D (B, heads, S, L, D) tensors."""
    bsz, heads, seqs, length = q.shape[:4]

    def flat(t):
        return t.transpose(1, 2).reshape(bsz * seqs, heads, length,
                                         t.shape[-1])

    if width == 0:
        out = retention_1d_pytorch(flat(q), flat(k), flat(v), log_decay)
    else:
        out = retention_2d_pytorch(flat(q), flat(k), flat(v), log_decay,
                                   (length // width, width))
    return out.reshape(bsz, seqs, heads, length, -1).transpose(1, 2)


def strided(shape, dtype=torch.float32, scale=1.0, seed=0):
    """A non-contiguous (B, heads, S, L, D) view of (B, S, L, heads, D)."""
    gen = torch.Generator().manual_seed(seed)
    bsz, heads, seqs, length, dim = shape
    base = torch.randn(bsz, seqs, length, heads, dim, generator=gen) * scale
    return base.to(dtype).permute(0, 3, 1, 2, 4)


# (B, heads, S, L, Dk, Dv, width): odd sizes, several head dims, 1-D and
# 2-D, more than one key block (128) and a single token
CASES = [
    (2, 3, 2, 37, 16, 16, 0),
    (1, 2, 3, 130, 32, 32, 0),
    (2, 2, 1, 35, 8, 24, 5),
    (1, 4, 1, 143, 33, 17, 13),
    (1, 1, 1, 1, 5, 3, 0),
]


def make_inputs(case, dtype=torch.float32, seed=0):
    bsz, heads, seqs, length, dk, dv, width = case
    q = strided((bsz, heads, seqs, length, dk), dtype, 1.0, seed)
    k = strided((bsz, heads, seqs, length, dk), dtype, dk**-0.5, seed + 1)
    v = strided((bsz, heads, seqs, length, dv), dtype, 1.0, seed + 2)
    return q, k, v, log_decay_for(heads), width


@pytest.mark.parametrize('case', CASES)
def test_forward_float32_matches_float64_reference(case):
    q, k, v, log_decay, width = make_inputs(case)
    out, lse = torch.ops.mmvitmix.retention_forward(q, k, v, log_decay, width)
    ref = reference_5d(q.double(), k.double(), v.double(), log_decay.double(),
                       width)
    assert out.dtype == torch.float32 and lse.dtype == torch.float32
    assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    # the output keeps v's memory layout (no copy for the backbone)
    assert out.stride() == v.stride()


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_backward_matches_reference(case, dtype):
    q, k, v, log_decay, width = make_inputs(case, dtype)
    log_decay = log_decay.to(dtype)
    grads = []
    for fn in (_retention_fused, reference_5d):
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        decay = log_decay.clone().requires_grad_()
        out = fn(*leaves, decay, width)
        gen = torch.Generator().manual_seed(3)
        out.backward(torch.randn(out.shape, generator=gen, dtype=dtype))
        grads.append([t.grad for t in leaves] + [decay.grad])
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    for got, want in zip(*grads):
        scale = want.abs().max().item() + 1
        assert_close(got, want, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize('width', [0, 3])
def test_gradcheck_float64(width):
    q, k, v, _, _ = make_inputs((1, 2, 1, 6, 3, 2, width), torch.float64)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    decay = log_decay_for(2, torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda *t: _retention_fused(*t, width), (*leaves, decay))


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_reduced_precision_cpu(dtype):
    q, k, v, log_decay, width = make_inputs((2, 2, 2, 40, 16, 16, 0), dtype)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = _retention_fused(*leaves, log_decay, width)
    assert out.dtype == dtype
    ref_leaves = [t.detach().float().requires_grad_() for t in (q, k, v)]
    ref = reference_5d(*ref_leaves, log_decay, width)
    assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
    out.backward(grad.to(dtype))
    ref.backward(grad)
    for got, want in zip(leaves, ref_leaves):
        scale = want.grad.abs().max().item()
        assert_close(got.grad.float(), want.grad, rtol=3e-2, atol=3e-2 * scale)


def test_mixed_dtypes_follow_the_reference():
    """Under autocast q, k may be float32 while v is bfloat16."""
    q, k, _, log_decay, width = make_inputs((1, 2, 1, 20, 16, 16, 0))
    v = strided((1, 2, 1, 20, 16), torch.bfloat16, seed=9)
    out = _retention_fused(q, k, v, log_decay, width)
    ref = reference_5d(q, k, v, log_decay, width)
    assert out.dtype == ref.dtype == torch.bfloat16
    assert_close(out.float(), ref.float(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize('decomposed', [True, False])
def test_retention_attention_seam(decomposed, monkeypatch):
    """The backbone's layout (B, H, W, heads, D) read in place, both paths."""
    bsz, heads, height, width, dim = 2, 2, 7, 9, 16
    gen = torch.Generator().manual_seed(0)

    def proj(scale=1.0):
        x = torch.randn(bsz, height, width, heads, dim, generator=gen) * scale
        return x.permute(0, 3, 1, 2, 4).requires_grad_()

    q, k, v = proj(), proj(dim**-0.5), proj()
    log_decay = log_decay_for(heads)
    out = retention_attention(q, k, v, log_decay, decomposed, backend='fused')
    # the fused output needs no copy for (B, H, W, heads·D)
    assert out.permute(0, 2, 3, 1, 4).is_contiguous()
    grad = torch.randn(out.shape, generator=gen)
    fused_grads = torch.autograd.grad(out, (q, k, v), grad)
    monkeypatch.setenv('MMVITMIX_ATTN_BACKEND', 'reference')
    ref = retention_attention(q, k, v, log_decay, decomposed)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(fused_grads, ref_grads):
        assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('decomposed', [True, False])
def test_seam_with_rotary_tables_equals_reference(decomposed):
    """RMT's call: un-rotated projections, tables and scale; fused (torch
    rotates, the kernel attends) against the reference in float64."""
    bsz, heads, height, width, dim = 1, 2, 5, 6, 8
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(bsz, heads, height, width, dim, generator=gen,
                           dtype=torch.float64).requires_grad_()
               for _ in range(3))
    angle = torch.rand(dim // 2, generator=gen, dtype=torch.float64)
    phase = torch.arange(height * width, dtype=torch.float64)[:, None] * \
        angle.repeat_interleave(2)[None]
    sin = phase.sin().reshape(height, width, dim)
    cos = phase.cos().reshape(height, width, dim)
    log_decay = log_decay_for(heads, torch.float64)
    grad = torch.randn(bsz, heads, height, width, dim, generator=gen,
                       dtype=torch.float64)
    results = []
    for backend in ('fused', 'reference'):
        out = retention_attention(q, k, v, log_decay, decomposed, sin=sin,
                                  cos=cos, scale=dim**-0.5, backend=backend)
        results.append((out, torch.autograd.grad(out, (q, k, v), grad)))
    (out, grads), (ref, ref_grads) = results
    assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, ref_grads):
        assert_close(got, want, rtol=1e-10, atol=1e-10)
    # and the reference is the official formula: k·scale, then theta_shift
    official = reference_5d(
        theta_shift(q, sin, cos).flatten(2, 3).unsqueeze(2),
        theta_shift(k * dim**-0.5, sin, cos).flatten(2, 3).unsqueeze(2),
        v.flatten(2, 3).unsqueeze(2), log_decay, width)
    if not decomposed:
        assert_close(ref.flatten(2, 3), official[:, :, 0])


def test_1d_and_2d_seams_use_the_kernel():
    q, k, v, log_decay, _ = make_inputs((2, 3, 1, 12, 8, 8, 0))
    q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]
    assert_close(
        retention_1d(q, k, v, log_decay),
        retention_1d_pytorch(q, k, v, log_decay),
        rtol=1e-5,
        atol=1e-5)
    assert_close(
        retention_2d(q, k, v, log_decay, (3, 4)),
        retention_2d_pytorch(q, k, v, log_decay, (3, 4)),
        rtol=1e-5,
        atol=1e-5)
    with pytest.raises(ValueError, match='does not match'):
        retention_2d(q, k, v, log_decay, (5, 4))


def test_reference_env_skips_the_kernel(monkeypatch):
    def no_kernel(*args, **kwargs):
        raise AssertionError('the fused kernel was asked for')

    monkeypatch.setenv('MMVITMIX_ATTN_BACKEND', 'reference')
    monkeypatch.setattr(fused, 'retention', no_kernel)
    q, k, v, log_decay, _ = make_inputs((1, 2, 1, 10, 8, 8, 0))
    q5 = q[:, :, 0].unsqueeze(2).expand(1, 2, 3, 10, 8)
    out = retention_attention(q5, q5, q5, log_decay, True)
    assert out.shape == (1, 2, 3, 10, 8)


@pytest.mark.parametrize('bad, match', [
    (dict(log_decay=torch.zeros(3)), 'log_decay has 3 entries for 2 heads'),
    (dict(width=4), 'do not fill rows of width 4'),
    (dict(k=torch.zeros(1, 2, 1, 10, 7)), 'k shape'),
    (dict(v=torch.zeros(1, 2, 1, 9, 8)), 'v shape'),
    (dict(q=torch.zeros(2, 1, 10, 8)), 'q must be 5-D'),
    (dict(v=torch.zeros(1, 2, 1, 10, 8, dtype=torch.float64)),
     'must share a dtype'),
    (dict(q=torch.zeros(1, 2, 1, 10, 8, dtype=torch.int64)),
     'must be float32, float64, float16 or bfloat16'),
])
def test_bad_inputs_raise_clear_errors(bad, match):
    args = dict(
        q=torch.zeros(1, 2, 1, 10, 8),
        k=torch.zeros(1, 2, 1, 10, 8),
        v=torch.zeros(1, 2, 1, 10, 8),
        log_decay=torch.zeros(2),
        width=0)
    args.update(bad)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.mmvitmix.retention_forward(**args)


def test_torch_compile_and_opcheck():
    q, k, v, log_decay, _ = make_inputs((1, 2, 2, 9, 8, 8, 0))
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]

    def layer(q, k, v):
        return retention_attention(q, k, v, log_decay, True,
                                   backend='fused').sum(-1)

    torch._dynamo.reset()
    compiled = torch.compile(layer, backend='aot_eager', fullgraph=True)
    out = compiled(*leaves)
    grads = torch.autograd.grad(out.sum(), leaves)
    ref_leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ref = layer(*ref_leaves)
    ref_grads = torch.autograd.grad(ref.sum(), ref_leaves)
    assert_close(out, ref)
    for got, want in zip(grads, ref_grads):
        assert_close(got, want)

    torch.library.opcheck(torch.ops.mmvitmix.retention_forward.default,
                          (*leaves, log_decay, 0))
    out5, lse = torch.ops.mmvitmix.retention_forward(q, k, v, log_decay, 3)
    torch.library.opcheck(
        torch.ops.mmvitmix.retention_backward.default,
        (torch.ones_like(out5), q, k, v, out5, lse, log_decay, 3, True),
        test_utils=('test_schema', 'test_faketensor'))


@requires_cuda
@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('dtype, tol', [(torch.float32, 1e-4),
                                        (torch.float16, 5e-3),
                                        (torch.bfloat16, 3e-2)])
def test_cuda_matches_reference(case, dtype, tol):
    q, k, v, log_decay, width = make_inputs(case, dtype)
    dev = [t.detach().cuda().requires_grad_() for t in (q, k, v)]
    decay = log_decay.cuda().requires_grad_()
    out = _retention_fused(*dev, decay, width)
    assert out.is_cuda and out.dtype == dtype
    ref_leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref_decay = log_decay.double().requires_grad_()
    ref = reference_5d(*ref_leaves, ref_decay, width)
    assert_close(out.double().cpu(), ref, rtol=tol, atol=tol)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    out.backward(grad.to(dtype).cuda())
    ref.backward(grad.to(dtype).double())
    for got, want in zip(dev + [decay], ref_leaves + [ref_decay]):
        scale = want.grad.abs().max().item() + 1
        assert_close(
            got.grad.double().cpu(), want.grad, rtol=tol, atol=tol * scale)


def test_seam_rejects_bad_tables():
    """The seam checks RMT's rotary tables and scale before any backend."""
    q = torch.zeros(1, 2, 3, 4, 8)
    log_decay = torch.zeros(2)
    sin = torch.zeros(3, 4, 8)
    with pytest.raises(ValueError, match='both rotary tables'):
        retention_attention(q, q, q, log_decay, True, sin=sin)
    with pytest.raises(ValueError, match=r'sin must be \(H, W, Dk\)'):
        retention_attention(
            q, q, q, log_decay, True, sin=sin[:2], cos=sin[:2])
    with pytest.raises(ValueError, match='scale must be finite'):
        retention_attention(q, q, q, log_decay, True, scale=float('nan'))
    with pytest.raises(ValueError, match='no gradient is computed'):
        retention_attention(
            q, q, q, log_decay, True, sin=sin.requires_grad_(), cos=sin)
