"""LayerNorm + linears keeping only the norm's input for backward
(mmvitmix.ops.norm_linear): the plain modules are the oracle, in float64."""
import pytest
import torch
import torch.nn as nn
from torch.testing import assert_close

from mmvitmix.models.backbones.rmt import RMT
from mmvitmix.ops import norm_linear
from mmvitmix.ops.norm_linear import (_NormLinears, fused_usable,
                                      norm_linears, norm_linears_reference)
from tests.utils import tiny_arch


def make(width=12, outs=(12, 12, 7), bias=(True, True, False), seed=0,
         dtype=torch.float64):
    torch.manual_seed(seed)
    norm = nn.LayerNorm(width, eps=1e-6).to(dtype)
    with torch.no_grad():  # not the identity init: a real affine
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    linears = [nn.Linear(width, o, bias=b).to(dtype)
               for o, b in zip(outs, bias)]
    x = torch.randn(2, 5, 3, width, dtype=dtype, requires_grad=True)
    return x, norm, linears


def params(norm, linears):
    return [norm.weight, norm.bias] + [
        p for lin in linears for p in lin.parameters()]


@pytest.mark.parametrize('outs', [(12, ), (12, 12, 12), (30, 12, 5)])
def test_equals_modules_float64(outs):
    x, norm, linears = make(outs=outs, bias=[True] * len(outs))
    assert fused_usable(x, *params(norm, linears))
    got = norm_linears(x, norm, linears)
    want = norm_linears_reference(x, norm, linears)
    wrt = [x] + params(norm, linears)
    grads = [torch.randn_like(g) for g in got]
    g1 = torch.autograd.grad(got, wrt, grads)
    g2 = torch.autograd.grad(want, wrt, grads)
    for a, b in zip(got, want):
        assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g2):
        assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_gradcheck_with_an_output_unused():
    x, norm, linears = make()
    ps = params(norm, linears)

    def fn(x, *ps):
        outs = _NormLinears.apply(x, ps[0], ps[1], norm.eps, 3, ps[2], ps[3],
                                  ps[4], ps[5], ps[6], None)
        return outs[0], outs[2]  # the second linear gets no gradient

    assert torch.autograd.gradcheck(fn, [x] + ps[:6] + [ps[6]], eps=1e-6,
                                    atol=1e-8)


def test_keeps_the_input_not_the_normalised_tensor():
    x, norm, linears = make(width=64, outs=(64, 64, 64),
                            bias=(True, True, True))
    full = x.numel()

    def big_saved(fn):
        found = {}

        def pack(t):
            if t.numel() == full:
                found[t.untyped_storage().data_ptr()] = t
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(x, norm, linears)
        return list(found.values())

    kept = big_saved(norm_linears)
    assert len(kept) == 1 and kept[0] is x
    assert len(big_saved(norm_linears_reference)) == 2  # input and output


@pytest.mark.parametrize('why', ['no_grad', 'autocast', 'bfloat16',
                                 'strided'])
def test_modules_where_fused_does_not_apply(why):
    x, norm, linears = make(dtype=torch.float32)
    if why == 'bfloat16':
        x = x.detach().bfloat16().requires_grad_()
    if why == 'strided':
        x = x.detach().transpose(1, 2).requires_grad_()
    ps = params(norm, linears)
    if why == 'no_grad':
        with torch.no_grad():
            assert not fused_usable(x, *ps)
    elif why == 'autocast':
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert not fused_usable(x, *ps)
    else:
        assert not fused_usable(x, *ps)


def test_rmt_training_equals_the_plain_modules(monkeypatch):
    """A whole RMT (tiny, float64) in training: outputs and every gradient
    are those of the plain modules."""
    torch.manual_seed(0)
    model = RMT(arch=tiny_arch('RMT'), drop_path_rate=0.).double().train()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)

    def run():
        outs = model(x)
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype
                                       ).view_as(o)).sum() for o in outs)
        return outs, torch.autograd.grad(loss, list(model.parameters()))

    calls = []
    real = _NormLinears.apply
    monkeypatch.setattr(_NormLinears, 'apply',
                        lambda *a: calls.append(1) or real(*a))
    outs, grads = run()
    assert len(calls) == 2 * sum(tiny_arch('RMT')['depths'])
    monkeypatch.setattr(norm_linear, 'fused_usable', lambda *a: False)
    want_outs, want_grads = run()
    for a, b in zip(outs, want_outs):
        assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, want_grads):
        assert_close(a, b, rtol=1e-10, atol=1e-12)
