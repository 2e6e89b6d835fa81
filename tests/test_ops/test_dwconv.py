"""Depthwise convolution with the compiled CPU weight gradient
(mmvitmix.ops.dwconv): torch's own gradients are the oracle, in float64."""
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from mmvitmix.ops import extension
from mmvitmix.ops.dwconv import (_DepthwiseConv2d, depthwise_conv2d,
                                 dwconv_weight_grad_reference)

needs_ext = pytest.mark.skipif(
    not extension.load_ext(), reason='mmvitmix._ext is not built')

# (N, C, H, W, kernel, padding): odd sizes, channel counts that fill the
# 32-byte blocks and ones that leave a tail, every kernel-width path
CASES = [
    (2, 7, 5, 9, 3, 1),
    (1, 16, 8, 8, 3, 1),
    (2, 20, 6, 11, 5, 2),
    (1, 9, 7, 4, 7, 3),
    (1, 12, 5, 5, 1, 0),
    (1, 8, 6, 6, 4, 1),
    (2, 24, 9, 7, 5, 1),
    (1, 40, 3, 3, 5, 2),
]


def channels_last(*shape, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    return torch.randn(n, h, w, c, generator=gen,
                       dtype=dtype).permute(0, 3, 1, 2)


@needs_ext
@pytest.mark.parametrize('case', CASES)
def test_weight_grad_equals_torch_float64(case):
    n, c, h, w, k, p = case
    x = channels_last(n, c, h, w)
    weight = torch.randn(c, 1, k, k, dtype=torch.float64)
    out_h, out_w = h + 2 * p - k + 1, w + 2 * p - k + 1
    grad = channels_last(n, c, out_h, out_w, seed=1)
    want = dwconv_weight_grad_reference(grad, x, weight, (p, p))
    got = torch.ops.mmvitmix.dwconv_weight_grad(
        grad.permute(0, 2, 3, 1).contiguous(),
        x.permute(0, 2, 3, 1).contiguous(), k, k, p, p)
    assert got.shape == (c, 1, k, k)
    assert_close(got, want, rtol=1e-12, atol=1e-12)


@needs_ext
@pytest.mark.parametrize('case', CASES[:4])
def test_autograd_equals_conv2d(case):
    n, c, h, w, k, p = case
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
        x = channels_last(n, c, h, w, dtype=dtype).requires_grad_()
        weight = torch.randn(c, 1, k, k, dtype=dtype, requires_grad=True)
        bias = torch.randn(c, dtype=dtype, requires_grad=True)
        out = depthwise_conv2d(x, weight, bias, (p, p))
        assert out.grad_fn.name() == '_DepthwiseConv2dBackward'
        want = F.conv2d(x, weight, bias, padding=p, groups=c)
        assert_close(out, want, rtol=0, atol=0)
        grad = torch.randn_like(want)
        got = torch.autograd.grad(out, (x, weight, bias), grad)
        ref = torch.autograd.grad(want, (x, weight, bias), grad)
        for g, r in zip(got, ref):
            assert_close(g, r, rtol=tol, atol=tol)


@needs_ext
def test_gradcheck():
    x = channels_last(1, 5, 4, 6).requires_grad_()
    weight = torch.randn(5, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, c: _DepthwiseConv2d.apply(a, b, c, (1, 1)),
        (x, weight, bias))


@needs_ext
def test_threads_agree():
    x = channels_last(2, 24, 17, 9)
    grad = channels_last(2, 24, 17, 9, seed=1)
    args = (grad.permute(0, 2, 3, 1).contiguous(),
            x.permute(0, 2, 3, 1).contiguous(), 3, 3, 1, 1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.mmvitmix.dwconv_weight_grad(*args)
        torch.set_num_threads(2)
        two = torch.ops.mmvitmix.dwconv_weight_grad(*args)
    finally:
        torch.set_num_threads(threads)
    assert_close(one, two, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('why', ['no_grad', 'nchw', 'bfloat16', 'frozen'])
def test_plain_conv_where_the_kernel_does_not_apply(why):
    dtype = torch.bfloat16 if why == 'bfloat16' else torch.float32
    x = channels_last(1, 8, 5, 5, dtype=dtype)
    if why == 'nchw':
        x = x.contiguous()
    weight = torch.randn(8, 1, 3, 3, dtype=dtype,
                         requires_grad=why != 'frozen')
    with torch.set_grad_enabled(why != 'no_grad'):
        out = depthwise_conv2d(x, weight, None, (1, 1))
    assert out.grad_fn is None or out.grad_fn.name() != \
        '_DepthwiseConv2dBackward'
    assert_close(out, F.conv2d(x, weight, None, padding=1, groups=8))


def test_bad_shapes_raise_clear_errors():
    x = channels_last(1, 8, 5, 5, dtype=torch.float32)
    with pytest.raises(ValueError, match=r'weight must be \(C, 1, kh, kw\)'):
        depthwise_conv2d(x, torch.randn(8, 2, 3, 3), None, (1, 1))
    with pytest.raises(ValueError, match=r'input \(1, 8, 5, 5\)'):
        depthwise_conv2d(x, torch.randn(4, 1, 3, 3), None, (1, 1))


@needs_ext
def test_op_checks_its_arguments():
    x = torch.randn(1, 5, 5, 8)
    with pytest.raises(RuntimeError, match='does not match input'):
        torch.ops.mmvitmix.dwconv_weight_grad(torch.randn(1, 4, 5, 8), x, 3,
                                              3, 1, 1)
    with pytest.raises(RuntimeError, match='float32 or float64'):
        torch.ops.mmvitmix.dwconv_weight_grad(x.half(), x.half(), 3, 3, 1, 1)


def test_rmt_dwconv_plus_input_is_the_residual_sum():
    """RMT folds ``x + dwconv(x)`` into the filter's centre tap."""
    from mmvitmix.models.backbones.rmt import DWConv2d
    conv = DWConv2d(12, 3).double()
    x = torch.randn(2, 5, 7, 12, dtype=torch.float64)
    assert_close(conv(x, plus_input=True), x + conv(x), rtol=1e-12,
                 atol=1e-12)
