"""The contract every mmvitmix backbone keeps, tested once for all of them.

Parametrised over every ``VitMixBackbone`` registered in mmvitmix's model
registry, so a fifth backbone is held to it as soon as it is registered
(with a tiny architecture added to ``tests.utils.TINY_ARCHS``). What is
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
from tests.utils import TINY_ARCHS, tiny_arch
from .conftest import BACKBONES, embed_dims, tiny

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
    missing = [
        c.__name__ for c in registered
        if c not in BACKBONES or c.__name__ not in TINY_ARCHS
    ]
    assert not missing, (
        f'put {missing} under the contract: a tiny arch in tests/utils.py '
        '(TINY_ARCHS) and the class in BACKBONES of '
        'tests/test_models/test_backbones/conftest.py')


def test_built_through_every_registry(backbone_cls):
    """``type='mmvitmix.X'`` from mmengine's root and from the downstream
    libraries' scopes (mmdet, mmseg, mmpretrain), as configs use it."""
    name = backbone_cls.__name__
    cfg = dict(type=f'mmvitmix.{name}', arch=tiny_arch(name))
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
    statistics unchanged), everything after trains (BatchNorm statistics
    move)."""
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
    # stage i is ``stages[i]`` and the output norm ``norm{i}``: frozen from
    # frozen_stages=i + 1 on (the stem, wherever it sits, from 0 on)
    stem = {id(p) for m in model.stage_modules(-1) for p in m.parameters()}
    for i in range(4):
        for module in (model.stages[i], getattr(model, f'norm{i}', None)):
            if module is None:
                continue
            for name, param in module.named_parameters():
                should_freeze = frozen >= (0 if id(param) in stem else i + 1)
                assert param.requires_grad != should_freeze, (i, name)
    frozen_bns = [
        m for i in range(-1, frozen) for mod in model.stage_modules(i)
        if mod is not None for m in mod.modules() if isinstance(m, _BatchNorm)
    ]
    assert all(not m.training for m in frozen_bns)
    live_bns = [
        m for m in model.modules()
        if isinstance(m, _BatchNorm) and all(m is not f for f in frozen_bns)
    ]
    assert all(m.training for m in live_bns)
    stats = [m.running_mean.clone() for m in frozen_bns]
    live_stats = [m.running_mean.clone() for m in live_bns]
    if frozen == 4:  # nothing left to train
        assert not any(p.requires_grad for p in model.parameters())
        return
    outs = model(torch.randn(2, 3, 64, 64))
    for m, before in zip(frozen_bns, stats):
        assert torch.equal(m.running_mean, before)
    for m, before in zip(live_bns, live_stats):
        assert not torch.equal(m.running_mean, before)
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
    # four stages of total stride 32: 32 is the smallest side
    assert model.min_input_size == 32
    with pytest.raises(ValueError, match='too small.*at least 32'):
        model(torch.zeros(1, 3, 31, 64))
    with pytest.raises(ValueError, match='too small.*at least 32'):
        model(torch.zeros(1, 3, 64, 31))
    with torch.no_grad():
        assert len(model(torch.zeros(1, 3, 32, 32))) == 4
    with pytest.raises(ValueError, match='out_indices entry 4 is out of '
                       'range'):
        tiny(backbone_cls, out_indices=(4, ))
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


def unregistered_parameters(model: nn.Module) -> list:
    """Where ``model`` holds trainable state that ``nn.Module`` does not
    see: an ``nn.Parameter``, a tensor that requires grad or an
    ``nn.Module`` kept in a plain attribute, a list / tuple / dict, or an
    object of this project that is no module. ``parameters()``,
    ``state_dict()``, ``.to()``, freezing and the optimiser all miss such
    state."""
    found = []
    seen = set()

    def visit(value, path, depth):
        if id(value) in seen or depth > 6:
            return
        seen.add(id(value))
        if isinstance(value, (nn.Module, nn.Parameter)) or (
                isinstance(value, torch.Tensor) and value.requires_grad):
            found.append(f'{path} ({type(value).__name__})')
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, f'{path}[{key!r}]', depth + 1)
        elif isinstance(value, (list, tuple, set)):
            for i, item in enumerate(value):
                visit(item, f'{path}[{i}]', depth + 1)
        elif type(value).__module__.startswith(('mmvitmix', 'tests')) and \
                hasattr(value, '__dict__'):
            for key, item in vars(value).items():
                visit(item, f'{path}.{key}', depth + 1)

    for prefix, module in model.named_modules():
        for key, value in vars(module).items():
            if key in ('_parameters', '_buffers', '_modules'):
                continue  # registered: what nn.Module tracks
            visit(value, f'{prefix}.{key}' if prefix else key, 0)
    return found


def assert_parameters_registered(model: nn.Module) -> None:
    found = unregistered_parameters(model)
    assert not found, ('trainable state outside nn.Module\'s bookkeeping '
                       f'(register it as a parameter or submodule): {found}')


class _Holder:
    """A plain object (no nn.Module) of this project."""


def test_parameters_live_in_registered_modules(backbone_cls):
    """Every trainable tensor and submodule is registered, so that
    ``parameters()`` and ``state_dict()`` cover the whole model."""
    assert_parameters_registered(tiny(backbone_cls))


def test_unregistered_parameters_are_found(backbone_cls):
    """The check above fails on a backbone that keeps a raw nn.Parameter
    outside nn.Module's bookkeeping: in a plain list, on a plain object,
    or inside a layer that is not registered."""

    class Broken(backbone_cls):

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.gains = [nn.Parameter(torch.ones(4))]
            self.stages[0].holder = _Holder()
            self.stages[0].holder.scale = nn.Parameter(torch.ones(1))
            self.__dict__['proj'] = nn.Linear(4, 4)

    broken = Broken(arch=tiny_arch(backbone_cls.__name__))
    with pytest.raises(AssertionError) as info:
        assert_parameters_registered(broken)
    for path in ('gains[0] (Parameter)', 'stages.0.holder.scale (Parameter)',
                 'proj (Linear)'):
        assert path in str(info.value)
    # nn.Module sees none of them (what the check is for)
    assert sum(p.numel() for p in broken.parameters()) == sum(
        p.numel() for p in tiny(backbone_cls).parameters())


@pytest.mark.parametrize('train', [False, True])
def test_no_input_copy_inside_convolutions(backbone_cls, train):
    """At batch 1 no convolution copies its input to another memory layout.

    torch's CPU convolution takes channels-last input as it is, unless the
    batch stride of a batch-1 view is degenerate (e.g. ``tokens.transpose(1,
    2).reshape(1, C, H, W)``): then it clones the input to NCHW and works in
    NCHW, several times slower (ResT's key/value reduction conv: 10 ms
    instead of 0.2 ms at 512x512). The stages reshape tokens to NCHW as
    views with natural strides instead. (oneDNN's reorders of its output
    and of the small weights are not input copies.)
    """
    from torch.profiler import profile
    model = tiny(backbone_cls).train(train)
    x = torch.randn(1, 3, 64, 96)
    with torch.set_grad_enabled(train):
        model(x)
        with profile(record_shapes=True) as prof:
            outs = model(x)
    copying = []
    for event in prof.events():
        if event.name != 'aten::clone':
            continue
        parent = event.cpu_parent
        while parent is not None and parent.name != 'aten::_convolution':
            parent = parent.cpu_parent
        if parent is not None and event.input_shapes[0] == parent.input_shapes[0]:
            copying.append(str(parent.input_shapes[:2]))
    assert not copying, f'convolutions that copied their input: {copying}'
    assert len(outs) == len(model.out_indices)
