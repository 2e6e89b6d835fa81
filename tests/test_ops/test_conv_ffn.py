"""RMT's conv-FFN tail that keeps only fc1's output for backward
(mmvitmix.ops.conv_ffn): the plain autograd ops are the oracle, in float64."""
import pytest
import torch
from torch.testing import assert_close

import mmvitmix.models.backbones.rmt as rmt_module
from mmvitmix.models.backbones.rmt import ConvFFN
from mmvitmix.ops import conv_ffn
from mmvitmix.ops.conv_ffn import (_ConvFFNTail, conv_ffn_tail,
                                   conv_ffn_tail_reference, fused_tail_usable)

# (B, H, W, hidden, C, kernel, biases)
CASES = [
    (2, 5, 7, 6, 4, 3, True),
    (1, 9, 4, 24, 8, 3, False),
    (1, 6, 6, 10, 5, 5, True),
    (3, 1, 8, 7, 3, 3, True),
]


def make(case, dtype=torch.float64, seed=0):
    bsz, height, width, hidden, channels, k, biases = case
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen,
                           dtype=dtype).requires_grad_()

    return (rand(bsz, height, width, hidden), rand(hidden, 1, k, k),
            rand(hidden) if biases else None, rand(channels, hidden),
            rand(channels) if biases else None)


@pytest.mark.parametrize('compiled_wgrad', [True, False])
@pytest.mark.parametrize('case', CASES)
def test_fused_equals_plain_ops_float64(monkeypatch, case, compiled_wgrad):
    """Both weight-gradient paths: the compiled CPU kernel and torch's own
    (what a GPU, or a CPU without the extension, runs)."""
    if not compiled_wgrad:
        monkeypatch.setattr(conv_ffn, '_compiled_usable', lambda g: False)
    inputs = make(case)
    assert fused_tail_usable(*inputs)
    out = conv_ffn_tail(*inputs)
    expect = conv_ffn_tail_reference(*inputs)
    assert_close(out, expect, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(out)
    wrt = [t for t in inputs if t is not None]
    got = torch.autograd.grad(out, wrt, grad)
    want = torch.autograd.grad(expect, wrt, grad)
    for a, b in zip(got, want):
        assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_gradcheck():
    inputs = make(CASES[0])
    assert torch.autograd.gradcheck(
        lambda *t: _ConvFFNTail.apply(*t), inputs, eps=1e-6, atol=1e-8)


def test_only_fc1_output_is_saved():
    """Of the tail's tensors only ``h`` is kept: the saved hidden-size
    storage is one tensor, where the plain ops keep three."""
    inputs = make((1, 8, 8, 32, 4, 3, True))
    h = inputs[0]

    def hidden_bytes(fn):
        found = {}

        def pack(t):
            if t.numel() == h.numel():
                found[t.untyped_storage().data_ptr()] = t.untyped_storage(
                ).nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(*inputs)
        return sum(found.values())

    one = h.numel() * h.element_size()
    assert hidden_bytes(conv_ffn_tail) == one
    assert hidden_bytes(conv_ffn_tail_reference) >= 2 * one


@pytest.mark.parametrize('why', ['no_grad', 'autocast', 'float16',
                                 'mixed_dtype', 'strided'])
def test_plain_ops_where_fused_does_not_apply(why):
    inputs = list(make(CASES[0], dtype=torch.float32))
    if why == 'float16':
        inputs = [t.detach().half().requires_grad_() if t is not None else t
                  for t in inputs]
    if why == 'mixed_dtype':
        inputs[3] = inputs[3].detach().double().requires_grad_()
    if why == 'strided':
        inputs[0] = inputs[0].detach().transpose(1, 2).requires_grad_()
    if why == 'no_grad':
        with torch.no_grad():
            assert not fused_tail_usable(*inputs)
        return
    if why == 'autocast':
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert not fused_tail_usable(*inputs)
        return
    assert not fused_tail_usable(*inputs)


def test_output_takes_an_in_place_residual():
    """RMT's block adds the residual into the FFN's output in place; the
    fused output is not a view, so autograd allows it."""
    inputs = make(CASES[0])
    out = conv_ffn_tail(*inputs)
    assert out._base is None
    residual = torch.randn_like(out)
    out.add_(residual).sum().backward()
    assert inputs[0].grad is not None


@pytest.mark.parametrize('fused', [True, False])
def test_rmt_conv_ffn_module_same_function(monkeypatch, fused):
    """ConvFFN takes the fused tail in training; forward and gradients are
    those of the plain path, and inference (in-place GELU) agrees too."""
    torch.manual_seed(0)
    ffn = ConvFFN(8, 24).double()
    x = torch.randn(2, 6, 5, 8, dtype=torch.float64, requires_grad=True)
    calls = []
    real = conv_ffn._ConvFFNTail.apply
    monkeypatch.setattr(conv_ffn._ConvFFNTail, 'apply',
                        lambda *a: calls.append(1) or real(*a))
    if not fused:
        monkeypatch.setattr(rmt_module, 'fused_tail_usable',
                            lambda *a: False)
    out = ffn(x)
    assert bool(calls) == fused
    grads = torch.autograd.grad(out.sum(), [x, *ffn.parameters()])
    monkeypatch.setattr(rmt_module, 'fused_tail_usable', lambda *a: False)
    expect = ffn(x)
    expect_grads = torch.autograd.grad(expect.sum(), [x, *ffn.parameters()])
    assert_close(out, expect, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, expect_grads):
        assert_close(a, b, rtol=1e-11, atol=1e-11)
    with torch.no_grad():
        assert_close(ffn(x), expect, rtol=1e-12, atol=1e-12)
