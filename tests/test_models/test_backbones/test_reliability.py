"""Bad arguments, empty batches and checkpoints that cover too little, for
every backbone: the behaviour docs/reliability.md promises."""
import math

import pytest
import torch

from mmvitmix.models import RMT, ContainerLight, ResT, RIFormer
from mmvitmix.models.backbones.base import (DEFAULT_MIN_COVERAGE,
                                            check_number)
from tests.utils import tiny_arch
from .conftest import BACKBONES, IDS, tiny


# ------------------------------------------------------------- arguments
def test_check_number_messages():
    assert check_number('X', 'a', 0.5, low=0, high=1, high_open=True) == 0.5
    with pytest.raises(ValueError, match=r'X: a must be a number in \[0, 1\), '
                       'got 1'):
        check_number('X', 'a', 1, low=0, high=1, high_open=True)
    with pytest.raises(ValueError, match=r'in \(0, 1\], got 0'):
        check_number('X', 'a', 0, low=0, high=1, low_open=True)
    with pytest.raises(ValueError, match='got nan'):
        check_number('X', 'a', math.nan, low=0)
    with pytest.raises(ValueError, match='got inf'):
        check_number('X', 'a', math.inf)
    with pytest.raises(TypeError, match=r'must be an int in >= 1, got 2.0 '
                       r'\(float\)'):
        check_number('X', 'n', 2.0, integer=True, low=1)
    with pytest.raises(TypeError, match=r'got True \(bool\)'):
        check_number('X', 'n', True, integer=True, low=1)
    with pytest.raises(TypeError, match=r"got '0.1' \(str\)"):
        check_number('X', 'r', '0.1', low=0)


BAD_COMMON = [
    (dict(in_channels=0), ValueError, r'in_channels must be an int in >= 1, '
     'got 0'),
    (dict(in_channels=-3), ValueError, 'in_channels.*got -3'),
    (dict(in_channels=3.0), TypeError, r'in_channels.*\(float\)'),
    (dict(drop_path_rate=-0.1), ValueError,
     r'drop_path_rate must be a number in \[0, 1\), got -0.1'),
    (dict(drop_path_rate=1.0), ValueError, r'drop_path_rate.*\[0, 1\).*1.0'),
    (dict(drop_path_rate=math.nan), ValueError, 'drop_path_rate.*nan'),
    (dict(drop_path_rate='0.1'), TypeError, 'drop_path_rate'),
    (dict(norm_eval='yes'), TypeError, 'norm_eval must be True or False'),
    (dict(with_cp=1), TypeError, 'with_cp must be True or False'),
    (dict(frozen_stages=5), ValueError, r'frozen_stages must be an int in '
     r'-1..4'),
]


@pytest.mark.parametrize('cls', BACKBONES, ids=IDS)
@pytest.mark.parametrize('kwargs,exc,match', BAD_COMMON,
                         ids=[str(k) for k, _, _ in BAD_COMMON])
def test_bad_common_arguments(cls, kwargs, exc, match):
    with pytest.raises(exc, match=f'{cls.__name__}: {match}'):
        tiny(cls, **kwargs)


BAD_ARCH = {
    RMT: [
        ('depths', [1, 0, 1, 1], r"arch\['depths'\]\[1\] must be an int in "
         '>= 1, got 0'),
        ('num_heads', [2, 2, 3, 0], r"arch\['num_heads'\]\[3\].*got 0"),
        ('init_values', [2, 0, 2, 2], r"arch\['init_values'\]\[1\] must be a "
         r'number in > 0, got 0'),
        ('heads_ranges', [4, -1, 6, 6], r"arch\['heads_ranges'\]\[1\].*>= 0"),
        ('mlp_ratios', [2, 2, 0, 2], r"arch\['mlp_ratios'\]\[2\].*> 0"),
        ('layer_init_values', -1e-6, r"arch\['layer_init_values'\].*>= 0"),
    ],
    ResT: [
        ('depths', [1, 1, -1, 1], r"arch\['depths'\]\[2\].*>= 1, got -1"),
        ('sr_ratios', [8, 4, 2, 0], r"arch\['sr_ratios'\]\[3\].*>= 1"),
        ('mlp_ratios', [2, 2, 2, -1], r"arch\['mlp_ratios'\]\[3\].*> 0"),
        ('embed_dims', [16, 32, 48.0, 64], r"arch\['embed_dims'\]\[2\].*int"),
    ],
    ContainerLight: [
        ('mlp_ratio', [2, 0, 2, 2], r"arch\['mlp_ratio'\]\[1\].*> 0, got 0"),
        ('depth', [1, 0, 1, 2], r"arch\['depth'\].*positive ints"),
    ],
    RIFormer: [
        ('layers', [1, 0, 1, 1], r"arch\['layers'\]\[1\].*>= 1, got 0"),
        ('mlp_ratios', [2, 2, 2, 0], r"arch\['mlp_ratios'\]\[3\].*> 0"),
        ('layer_scale_init_value', -1.,
         r"arch\['layer_scale_init_value'\].*>= 0"),
    ],
}
BAD_ARCH_CASES = [(cls, key, value, match) for cls, cases in BAD_ARCH.items()
                  for key, value, match in cases]


@pytest.mark.parametrize(
    'cls,key,value,match',
    BAD_ARCH_CASES,
    ids=[f'{c.__name__}-{k}' for c, k, _, _ in BAD_ARCH_CASES])
def test_bad_arch_values(cls, key, value, match):
    arch = tiny_arch(cls.__name__)
    arch[key] = value
    with pytest.raises((ValueError, TypeError), match=match):
        cls(arch=arch)


def test_riformer_drop_rate_checked():
    with pytest.raises(ValueError, match=r'drop_rate must be a number in '
                       r'\[0, 1\), got 1.5'):
        tiny(RIFormer, drop_rate=1.5)


# --------------------------------------------------------------- batch 0
@pytest.mark.parametrize('cls', BACKBONES, ids=IDS)
@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
def test_empty_batch(cls, train):
    """A batch of 0 images gives empty outputs of the right shapes (those of
    a batch of 1, batch dimension 0), with a graph in training mode."""
    model = tiny(cls).train(train)
    with torch.no_grad():
        ref = model.eval()(torch.randn(1, 3, 72, 40))
    model.train(train)
    x = torch.randn(0, 3, 72, 40, requires_grad=train)
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(0, ) + tuple(r.shape[1:])
                                              for r in ref]
    if train:
        sum(o.sum() for o in outs).backward()
        assert x.grad is not None and x.grad.shape == x.shape


@pytest.mark.parametrize('backend', ['reference', 'sdpa', 'fused'])
@pytest.mark.parametrize('cls', [RMT, ResT], ids=['RMT', 'ResT'])
def test_empty_batch_every_backend(cls, backend):
    """A batch of 0 images through every backend ('fused': the CUDA host
    code and kernels emulated on the host, tests/test_ops/cuda_emulation)."""
    from contextlib import nullcontext

    from tests.test_ops.cuda_emulation import host_kernels
    model = tiny(cls, attn_backend=backend).eval()
    with torch.no_grad(), (host_kernels()
                           if backend == 'fused' else nullcontext()):
        outs = model(torch.randn(0, 3, 64, 64))
    assert [o.shape[0] for o in outs] == [0, 0, 0, 0]


# ---------------------------------------------------- checkpoint coverage
@pytest.mark.parametrize('cls', BACKBONES, ids=IDS)
def test_checkpoint_with_nothing_loadable_is_refused(cls, tmp_path):
    model = tiny(cls)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    empty = tmp_path / 'empty.pth'
    torch.save({}, empty)
    with pytest.raises(ValueError, match=f'{cls.__name__}: no parameter of '
                       f'the backbone could be loaded from {empty}'):
        model.load_pretrained(str(empty))
    # the same through init_cfg, whatever min_coverage says
    model = tiny(
        cls,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(empty), min_coverage=0.))
    with pytest.raises(ValueError, match='no parameter'):
        model.init_weights()
    for key, value in tiny(cls).state_dict().items():
        assert value.shape == before[key].shape


@pytest.mark.parametrize('cls', BACKBONES, ids=IDS)
def test_partial_checkpoint_refused_unless_opted_in(cls, tmp_path):
    source = tiny(cls)
    state = source.state_dict()
    # keep the stem and the first stage only: far below 90 %
    kept = {
        k: v
        for k, v in state.items()
        if k.startswith(('stem', 'stages.0.')) and not k.startswith('norm')
    }
    path = tmp_path / 'partial.pth'
    torch.save({'state_dict': kept}, path)

    model = tiny(cls, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as info:
        model.init_weights()
    message = str(info.value)
    assert str(path) in message
    assert f'below min_coverage={DEFAULT_MIN_COVERAGE:g}' in message
    assert 'stages.1.' in message  # the first missing keys are named
    assert 'min_coverage' in message and 'init_cfg' in message
    # nothing was loaded
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key

    # opting in loads what there is and reports the rest as missing
    model = tiny(
        cls,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(path), min_coverage=0.01))
    model.init_weights()
    for key, value in kept.items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize('cls', BACKBONES, ids=IDS)
def test_full_checkpoint_accepted_and_bad_min_coverage(cls, tmp_path):
    source = tiny(cls)
    path = tmp_path / 'full.pth'
    torch.save({'state_dict': source.state_dict()}, path)
    model = tiny(cls)
    report = model.load_pretrained(str(path), min_coverage=1.0)
    assert report['missing'] == [] and report['unexpected'] == []
    with pytest.raises(ValueError, match=r'min_coverage must be a number in '
                       r'\[0, 1\], got 1.5'):
        model.load_pretrained(str(path), min_coverage=1.5)
    with pytest.raises(ValueError, match="needs a 'checkpoint'"):
        tiny(cls, init_cfg=dict(type='Pretrained')).init_weights()
