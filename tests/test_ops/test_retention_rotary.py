"""The retention op with RMT's rotary shift and key scale fused in.

With tables ``sin``/``cos`` of shape (S, L, Dk) the op computes the
retention of ``scale·theta_shift(q)``, ``theta_shift(k)`` and ``v``, and
returns gradients w.r.t. the un-rotated q and k. The reference below builds
exactly that with the PyTorch ``theta_shift``.
"""
import pytest
import torch
from torch.testing import assert_close

from mmvitmix.ops import _dispatch
from mmvitmix.ops.retention import (_retention_fused, retention_attention,
                                    theta_shift)
from tests.test_ops.test_retention import (log_decay_for, make_inputs,
                                           reference_5d, requires_cuda,
                                           strided)


@pytest.fixture(scope='module', autouse=True)
def extension():
    assert _dispatch.load_ext(), _dispatch.ext_error()


def tables(seqs, length, dim, dtype=torch.float64, seed=7, paired=False):
    """sin/cos (S, L, Dk): random angles, or RMT's (one angle per pair).

    Random angles per channel (not per pair) check the general formula:
    rot(x)[2m] uses sin[2m], rot(x)[2m+1] uses sin[2m+1].
    """
    gen = torch.Generator().manual_seed(seed)
    width = dim // 2 if paired else dim
    angle = torch.rand(seqs, length, width, generator=gen,
                       dtype=torch.float64) * 6.3
    if paired:
        angle = angle.repeat_interleave(2, dim=-1)
    # a transposed view: the tables may have any strides
    sin = angle.sin().transpose(0, 1).contiguous().transpose(0, 1)
    return sin.to(dtype), angle.cos().to(dtype)


def reference_rot(q, k, v, log_decay, width, sin, cos, scale):
    return reference_5d(
        theta_shift(q, sin, cos) * scale, theta_shift(k, sin, cos), v,
        log_decay, width)


# (B, heads, S, L, Dk, Dv, width) with even Dk: 1-D, more than one key
# block, 2-D, a single token
CASES = [
    (2, 3, 2, 37, 16, 16, 0),
    (1, 2, 3, 130, 32, 24, 0),
    (2, 2, 1, 35, 8, 24, 5),
    (1, 1, 1, 1, 6, 3, 0),
]


def rot_inputs(case, dtype=torch.float32, paired=False):
    q, k, v, log_decay, width = make_inputs(case, dtype)
    sin, cos = tables(case[2], case[3], case[4], dtype, paired=paired)
    return q, k * case[4]**0.5, v, log_decay, width, sin, cos


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('paired', [False, True])
def test_forward_matches_float64_reference(case, paired):
    q, k, v, log_decay, width, sin, cos = rot_inputs(case, paired=paired)
    scale = case[4]**-0.5
    out, lse = torch.ops.mmvitmix.retention_forward(q, k, v, log_decay, width,
                                                    sin, cos, scale)
    ref = reference_rot(q.double(), k.double(), v.double(),
                        log_decay.double(), width, sin.double(),
                        cos.double(), scale)
    assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    assert out.stride() == v.stride()


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_backward_matches_reference(case, dtype):
    q, k, v, log_decay, width, sin, cos = rot_inputs(case, dtype)
    scale = 0.37
    grads = []
    for fn in (_retention_fused, reference_rot):
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        decay = log_decay.to(dtype).requires_grad_()
        out = fn(*leaves, decay, width, sin, cos, scale)
        gen = torch.Generator().manual_seed(3)
        out.backward(torch.randn(out.shape, generator=gen, dtype=dtype))
        grads.append([t.grad for t in leaves] + [decay.grad])
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    for got, want in zip(*grads):
        assert_close(got, want, rtol=tol, atol=tol * (want.abs().max() + 1))


@pytest.mark.parametrize('width', [0, 3])
def test_gradcheck_float64(width):
    q, k, v, _, _ = make_inputs((1, 2, 1, 6, 4, 3, width), torch.float64)
    sin, cos = tables(1, 6, 4)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    decay = log_decay_for(2, torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda *t: _retention_fused(*t, width, sin, cos, 0.7),
        (*leaves, decay))


def test_bfloat16_cpu():
    q, k, v, log_decay, width, sin, cos = rot_inputs((2, 2, 2, 40, 16, 16, 0),
                                                     torch.bfloat16)
    out = _retention_fused(q, k, v, log_decay, width, sin, cos, 0.25)
    ref = reference_rot(q.float(), k.float(), v.float(), log_decay, width,
                        sin.float(), cos.float(), 0.25)
    assert out.dtype == torch.bfloat16
    assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize('transpose', [False, True])
def test_aten_rotary_of_the_cuda_route(transpose):
    """``retention_rotary``: scale·rot(x), and scale·rotᵀ as its adjoint."""
    x = strided((2, 3, 4, 5, 6), torch.float64)
    sin, cos = tables(4, 5, 6)
    got = torch.ops.mmvitmix.retention_rotary(x, sin, cos, 0.5, transpose)
    if not transpose:
        assert_close(got, theta_shift(x, sin, cos) * 0.5)
    else:  # <rot(y), x> == <y, rotᵀ(x)> for every y
        y = strided((2, 3, 4, 5, 6), torch.float64, seed=5)
        lhs = (theta_shift(y, sin, cos) * 0.5 * x).sum()
        assert_close((y * got).sum(), lhs)


@pytest.mark.parametrize('decomposed', [True, False])
def test_seam_fused_equals_reference(decomposed, monkeypatch):
    """retention_attention with the backbone's tables, fused vs reference."""
    from mmvitmix.models.backbones.rmt import RetentionRelPos
    bsz, heads, height, width, dim = 2, 2, 7, 9, 16
    gen = torch.Generator().manual_seed(0)

    def proj():
        x = torch.randn(bsz, height, width, heads, dim, generator=gen)
        return x.permute(0, 3, 1, 2, 4).requires_grad_()

    q, k, v = proj(), proj(), proj()
    rel_pos = RetentionRelPos(heads * dim, heads, 2, 4)
    sin, cos = rel_pos(height, width, torch.float32)
    args = (q, k, v, rel_pos.log_decay, decomposed)
    out = retention_attention(*args, sin=sin, cos=cos, scale=dim**-0.5,
                              backend='fused')
    grad = torch.randn(out.shape, generator=gen)
    fused_grads = torch.autograd.grad(out, (q, k, v), grad)
    monkeypatch.setenv('MMVITMIX_FORCE_REFERENCE', '1')
    ref = retention_attention(*args, sin=sin, cos=cos, scale=dim**-0.5)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(fused_grads, ref_grads):
        assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_opcheck_with_tables():
    q, k, v, log_decay, _, sin, cos = rot_inputs((1, 2, 2, 9, 8, 8, 0))
    sin, cos = sin.float(), cos.float()
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    torch.library.opcheck(torch.ops.mmvitmix.retention_forward.default,
                          (*leaves, log_decay, 0, sin, cos, 0.5))
    out, lse = torch.ops.mmvitmix.retention_forward(q, k, v, log_decay, 0,
                                                    sin, cos, 0.5)
    torch.library.opcheck(
        torch.ops.mmvitmix.retention_backward.default,
        (torch.ones_like(out), q, k, v, out, lse, log_decay, 0, True, sin, cos,
         0.5),
        test_utils=('test_schema', 'test_faketensor'))


@pytest.mark.parametrize('bad, match', [
    (dict(sin=None), 'give both rotary tables sin and cos, or neither'),
    (dict(cos=torch.zeros(1, 9, 8)), r'cos must be \(S, L, Dk\)'),
    (dict(q=torch.zeros(1, 2, 1, 10, 7), k=torch.zeros(1, 2, 1, 10, 7),
          sin=torch.zeros(1, 10, 7), cos=torch.zeros(1, 10, 7)),
     'Dk must be even, got 7'),
    (dict(scale=float('nan')), 'scale must be finite'),
    (dict(sin=torch.zeros(1, 10, 8, dtype=torch.int32)),
     'sin must be float32, float64, float16 or bfloat16'),
])
def test_bad_tables_raise_clear_errors(bad, match):
    args = dict(
        q=torch.zeros(1, 2, 1, 10, 8),
        k=torch.zeros(1, 2, 1, 10, 8),
        v=torch.zeros(1, 2, 1, 10, 8),
        log_decay=torch.zeros(2),
        width=0,
        sin=torch.zeros(1, 10, 8),
        cos=torch.zeros(1, 10, 8),
        scale=1.0)
    args.update(bad)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.mmvitmix.retention_forward(**args)


def test_seam_rejects_bad_tables():
    q = torch.zeros(1, 2, 3, 4, 8)
    log_decay = torch.zeros(2)
    sin = torch.zeros(3, 4, 8)
    with pytest.raises(ValueError, match='both rotary tables'):
        retention_attention(q, q, q, log_decay, True, sin=sin)
    with pytest.raises(ValueError, match=r'sin must be \(H, W, Dk\)'):
        retention_attention(
            q, q, q, log_decay, True, sin=sin[:2], cos=sin[:2])
    with pytest.raises(ValueError, match='no gradient is computed'):
        retention_attention(
            q, q, q, log_decay, True, sin=sin.requires_grad_(), cos=sin)


@requires_cuda
@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('dtype, tol', [(torch.float32, 1e-4),
                                        (torch.bfloat16, 3e-2)])
def test_cuda_matches_reference(case, dtype, tol):
    q, k, v, log_decay, width, sin, cos = rot_inputs(case, dtype)
    dev = [t.detach().cuda().requires_grad_() for t in (q, k, v)]
    out = _retention_fused(*dev, log_decay.cuda(), width, sin.cuda(),
                           cos.cuda(), 0.3)
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = reference_rot(*leaves, log_decay.double(), width, sin.double(),
                        cos.double(), 0.3)
    assert_close(out.double().cpu(), ref, rtol=tol, atol=tol)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    out.backward(grad.to(dtype).cuda())
    ref.backward(grad.to(dtype).double())
    for got, want in zip(dev, leaves):
        scale = want.grad.abs().max().item() + 1
        assert_close(
            got.grad.double().cpu(), want.grad, rtol=tol, atol=tol * scale)
