"""The contract every mmvitmix backbone keeps, tested once for all of them.

Parametrised over every ``VitMixBackbone`` registered in mmvitmix's model
registry, so a fifth backbone is held to it as soon as it is registered
(with a tiny architecture added to ``conftest.TINY_ARCHS``). What is
specific to one backbone (parity with the official code, its converter,
RIFormer's deploy fold, Container's padding) stays in its own file.
"""
import pytest
import torch
import torch.nn as nn
from mmengine.registry import MODELS as ROOT_MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from mmvitmix.models.backbones.base import VitMixBackbone
from mmvitmix.registry import MODELS
from .conftest import BACKBONES, TINY_ARCHS, embed_dims, tiny

#: backbones whose default norms are not BatchNorm get one for the
#: norm_eval / frozen statistics checks
BN_KWARGS = {'RIFormer': dict(norm_cfg=dict(type='BN'))}


def registered_backbones():
    found = []
    for name, cls in MODELS.module_dict.items():
        if isinstance(cls, type) and issubclass(cls, VitMixBackbone):
            found.append(cls)
    return found


def test_every_registered_backbone_is_under_contract():
    registered = registered_backbones()
    assert set(BACKBONES) <= set(registered)
    missing = [c.__name__ for c in registered if c not in TINY_ARCHS]
    assert not missing, (f'add a tiny arch for {missing} to '
                         'tests/test_models/test_backbones/conftest.py')


def test_built_through_every_registry(backbone_cls):
    """``type='mmvitmix.X'`` from mmengine's root and from the downstream
    libraries' scopes (mmdet, mmseg, mmpretrain), as configs use it."""
    name = backbone_cls.__name__
    cfg = dict(type=f'mmvitmix.{name}', arch=TINY_ARCHS[backbone_cls])
    assert type(ROOT_MODELS.build(dict(cfg))) is backbone_cls
    for scope in ('mmdet', 'mmseg', 'mmpretrain'):
        registry = pytest.importorskip(f'{scope}.registry').MODELS
        assert type(registry.build(dict(cfg))) is backbone_cls, scope


def test_builds_on_the_meta_device(backbone_cls):
    with torch.device('meta'):
        model = tiny(backbone_cls, drop_path_rate=0.2)
    assert all(p.is_meta for p in model.parameters())


@pytest.mark.parametrize('out_indices', [(0, 1, 2, 3), (1, -1), 2, (3, )])
def test_out_indices_channels_and_strides(backbone_cls, out_indices):
    model = tiny(backbone_cls, out_indices=out_indices).eval()
    wanted = ([out_indices] if isinstance(out_indices, int) else
              list(out_indices))
    wanted = sorted(i % 4 for i in wanted)
    assert model.out_indices == tuple(wanted)
    # an output norm for each requested stage only
    for i in range(4):
        assert hasattr(model, f'norm{i}') == (i in wanted), i
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 64, 96))
    dims = embed_dims(backbone_cls)
    assert [tuple(o.shape) for o in outs] == [
        (2, dims[i], 64 // 2**(i + 2), 96 // 2**(i + 2)) for i in wanted
    ]
    assert all(o.is_contiguous() for o in outs)


@pytest.mark.parametrize('hw', [(65, 97), (33, 47)])
def test_odd_sizes_run_and_shrink_by_two_per_stage(backbone_cls, hw):
    model = tiny(backbone_cls).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *hw))
    sizes = [tuple(o.shape[-2:]) for o in outs]
    for i, (h, w) in enumerate(sizes):
        stride = 2**(i + 2)
        # floor or ceil of the side / stride, depending on the padding
        assert hw[0] // stride <= h <= -(-hw[0] // stride), (i, sizes)
        assert hw[1] // stride <= w <= -(-hw[1] // stride), (i, sizes)
    assert all(torch.isfinite(o).all() for o in outs)


def test_every_parameter_gets_a_gradient(backbone_cls):
    model = tiny(backbone_cls).train()
    outs = model(torch.randn(2, 3, 64, 64))
    sum(o.square().mean() for o in outs).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


def test_with_cp_is_the_same_function(backbone_cls):
    """Activation checkpointing: same outputs, gradients and BatchNorm
    statistics (updated once, not again in the recomputation)."""
    torch.manual_seed(0)
    ref = tiny(backbone_cls, drop_path_rate=0.2).train()
    ckp = tiny(backbone_cls, drop_path_rate=0.2, with_cp=True).train()
    ckp.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    outs_ref = ref(x)
    torch.manual_seed(1)
    outs_cp = ckp(x)
    for a, b in zip(outs_ref, outs_cp):
        torch.testing.assert_close(a, b)
    sum(o.square().sum() for o in outs_ref).backward()
    sum(o.square().sum() for o in outs_cp).backward()
    params_cp = dict(ckp.named_parameters())
    for name, param in ref.named_parameters():
        torch.testing.assert_close(param.grad, params_cp[name].grad,
                                   msg=name)
    buffers_cp = dict(ckp.named_buffers())
    for name, buf in ref.named_buffers():
        torch.testing.assert_close(buf, buffers_cp[name], msg=name)


@pytest.mark.parametrize('frozen', [-1, 0, 1, 2, 3, 4])
def test_frozen_stages(backbone_cls, frozen):
    """Stem + first ``frozen`` stages: no gradient, eval mode (BatchNorm
    statistics unchanged), everything after trains."""
    kwargs = BN_KWARGS.get(backbone_cls.__name__, {})
    model = tiny(backbone_cls, frozen_stages=frozen, **kwargs).train()
    frozen_params = {
        id(p)
        for i in range(-1, frozen) for m in model.stage_modules(i)
        if m is not None for p in m.parameters()
    }
    assert (len(frozen_params) == 0) == (frozen == -1)
    for name, param in model.named_parameters():
        assert param.requires_grad == (id(param) not in frozen_params), name
    frozen_bns = [
        m for i in range(-1, frozen) for mod in model.stage_modules(i)
        if mod is not None for m in mod.modules() if isinstance(m, _BatchNorm)
    ]
    assert all(not m.training for m in frozen_bns)
    stats = [m.running_mean.clone() for m in frozen_bns]
    if frozen == 4:  # nothing left to train
        assert not any(p.requires_grad for p in model.parameters())
        return
    outs = model(torch.randn(2, 3, 64, 64))
    for m, before in zip(frozen_bns, stats):
        assert torch.equal(m.running_mean, before)
    sum(o.square().mean() for o in outs).backward()
    for name, param in model.named_parameters():
        if id(param) in frozen_params:
            assert param.grad is None, name
        else:
            assert param.grad is not None, name


def test_every_parameter_belongs_to_a_stage(backbone_cls):
    """``frozen_stages=4`` must freeze everything: the stem and the four
    stages cover every parameter (Container-Light's stem is nested in its
    stage 0, so a parameter may be listed by two)."""
    model = tiny(backbone_cls)
    owners = {}
    for i in range(-1, 4):
        for module in model.stage_modules(i):
            if module is None:
                continue
            for name, p in module.named_parameters():
                owners.setdefault(id(p), i)
    orphans = [n for n, p in model.named_parameters() if id(p) not in owners]
    assert not orphans, f'parameters outside every stage: {orphans}'


def test_norm_eval_keeps_batchnorm_statistics(backbone_cls):
    kwargs = BN_KWARGS.get(backbone_cls.__name__, {})
    model = tiny(backbone_cls, norm_eval=True, **kwargs)
    assert model.train() is model
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(not m.training for m in bns)
    others = [
        m for m in model.modules()
        if not isinstance(m, _BatchNorm) and not list(m.children())
    ]
    assert all(m.training for m in others)
    with torch.no_grad():
        for m in bns:
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    running = {k: v.clone() for k, v in model.named_buffers()}
    outs = model(torch.randn(2, 3, 64, 64))
    for key, value in model.named_buffers():
        assert torch.equal(value, running[key]), key
    sum(o.square().mean() for o in outs).backward()
    assert all(m.weight.grad is not None for m in bns if m.affine)
    off = tiny(backbone_cls, norm_eval=False, **kwargs).train()
    assert all(m.training for m in off.modules()
               if isinstance(m, _BatchNorm))


def test_init_cfg_round_trip(backbone_cls, tmp_path):
    """Its own state dict, saved mmengine-style, loads back exactly through
    ``init_cfg``; so does a whole-model file with ``prefix``."""
    torch.manual_seed(0)
    source = tiny(backbone_cls)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    path = tmp_path / 'backbone.pth'
    torch.save({'state_dict': source.state_dict(), 'meta': {}}, path)
    model = tiny(
        backbone_cls, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key

    whole = tmp_path / 'detector.pth'
    torch.save(
        {
            'state_dict': {
                **{f'backbone.{k}': v
                   for k, v in source.state_dict().items()}, 'neck.w':
                torch.zeros(1)
            }
        }, whole)
    model = tiny(
        backbone_cls,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(whole), prefix='backbone.'))
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_bad_inputs(backbone_cls):
    model = tiny(backbone_cls).eval()
    name = backbone_cls.__name__
    with pytest.raises(TypeError, match=f'{name} expects a torch.Tensor'):
        model([torch.zeros(3, 64, 64)])
    with pytest.raises(ValueError, match='4-D NCHW'):
        model(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match='in_channels=3.*4 channels'):
        model(torch.zeros(1, 4, 64, 64))
    with pytest.raises(ValueError, match='too small'):
        model(torch.zeros(1, 3, model.min_input_size - 1, 64))
    with pytest.raises(TypeError, match=r'unknown argument\(s\) \[\'foo\'\]'):
        tiny(backbone_cls, foo=1)
    with pytest.raises(ValueError, match=f"{name}: unknown arch 'zz'"):
        backbone_cls(arch='zz')


def test_other_in_channels(backbone_cls):
    model = tiny(backbone_cls, in_channels=1).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 1, 64, 64))
    assert len(outs) == 4


def test_outputs_do_not_depend_on_the_batch(backbone_cls):
    """Eval mode: image i's features are the same alone or in a batch,
    up to float32 rounding (kernels block a batch differently; ResT's
    normalised attention maps amplify it to ~3e-5 of the output scale at
    random init), relative to the output's scale."""
    model = tiny(backbone_cls).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        batched = model(x)
        single = model(x[1:2])
    for a, b in zip(batched, single):
        err = (a[1:2] - b).abs().max().item()
        assert err <= 1e-4 * b.abs().max().item(), err


def test_layers_are_standard_modules(backbone_cls):
    """No parameters outside ``nn.Module`` attributes (state_dict covers
    every parameter; nothing lives in plain lists)."""
    model = tiny(backbone_cls)
    assert sum(p.numel() for p in model.parameters()) == sum(
        v.numel() for k, v in model.state_dict().items()
        if k in dict(model.named_parameters()))
    assert isinstance(model, nn.Module)
