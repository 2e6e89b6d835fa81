"""What a checkpoint is (mmvitmix.models.converters.identify), and the
backbones' refusals built on it: another family's file, another variant's
file, an unreadable file given to ``init_cfg`` / ``load_pretrained``."""
import json
import random
import re
from pathlib import Path

import pytest
import torch

from mmvitmix.models import RIFormer, RMT, ContainerLight, ResT, ResTV2
from mmvitmix.models.converters import describe_checkpoint, identify
from mmvitmix.models.converters.identify import FAMILIES

REPO = Path(__file__).resolve().parents[3]
GOLDEN = REPO / '..' / 'shared' / 'golden'
PARITY = REPO / 'tests' / 'data' / 'parity'
BACKBONES = [RMT, ResT, ResTV2, ContainerLight, RIFormer]


def _table():
    path = GOLDEN / 'official_checkpoints.json'
    if not path.is_file():
        pytest.skip(f'golden table {path} is not present')
    with open(path) as f:
        return json.load(f)


def _golden(name):
    path = GOLDEN / name
    if not path.is_file():
        pytest.skip(f'golden fixture {path} is not present')
    return torch.load(path, map_location='cpu', weights_only=False)


def _meta_state(shapes):
    """A release's {key: shape} table as meta tensors (no memory)."""
    return {k: torch.empty(s, device='meta') for k, s in shapes.items()}


# the official releases: family and registered variant from the file name
RELEASES = {
    'rmt_t': ('RMT', 't'), 'rmt_s': ('RMT', 's'), 'rmt_b': ('RMT', 'b'),
    'rmt_l': ('RMT', 'l'), 'rmt_s_token_label': ('RMT', 's'),
    'rmt_b_token_label': ('RMT', 'b'), 'rmt_l_token_label': ('RMT', 'l'),
    'rest_lite': ('ResT', 'lite'), 'rest_small': ('ResT', 'small'),
    'rest_base': ('ResT', 'base'), 'rest_large': ('ResT', 'large'),
    'container_light': ('ContainerLight', 'light'),
    'riformer_s12': ('RIFormer', 's12'), 'riformer_s24': ('RIFormer', 's24'),
    'riformer_s36': ('RIFormer', 's36'), 'riformer_m36': ('RIFormer', 'm36'),
    'riformer_m48': ('RIFormer', 'm48'),
}


def test_every_release_table_is_listed_here():
    assert sorted(_table()) == sorted(RELEASES)


@pytest.mark.parametrize('release', sorted(RELEASES))
def test_identify_every_official_release(release):
    family, variant = RELEASES[release]
    shapes = _table()[release]['checkpoint_keys']
    state = _meta_state(shapes)
    for wrapped, whole in (({'model': state}, False),
                           ({'state_dict': {'backbone.' + k: v
                                            for k, v in state.items()}},
                            True)):
        found = identify(wrapped)
        assert found is not None, release
        assert (found.family, found.layout, found.variant,
                found.whole_model) == (family, 'official', variant, whole)
        text = describe_checkpoint(wrapped)
        assert f"type='{FAMILIES[family][1]}', arch='{variant}'" in text
        assert 'official layout' in text


def test_released_rmt_t_is_rmt_t3():
    """qhfan/RMT issue #34 ('RMT-T weights do not match RMT_T3'): by its
    key/shape table the released RMT-T file is exactly RMT_T3 (= our
    arch='t'): embed dims 64/128/256/512, depths 2/2/8/2, heads 4/4/8/16,
    MLP ratio 3, no layer scale; its parameter count is the training log's
    ``n_parameters`` (RMT_log/rmt_t.txt)."""
    entry = _table()['rmt_t']
    found = identify(_meta_state(entry['checkpoint_keys']))
    t = RMT.arch_settings['t']
    for key in ('embed_dims', 'depths', 'num_heads', 'mlp_ratios',
                'layerscales'):
        assert found.arch[key] == t[key], key
    # decay values are not in a shape table: these stay undetermined
    assert {'init_values', 'heads_ranges',
            'chunkwise_recurrents'} == set(found.undetermined)
    buffers = ('running_mean', 'running_var', 'num_batches_tracked',
               'Relpos.angle', 'Relpos.decay')
    params = sum(
        torch.Size(s).numel() for k, s in entry['checkpoint_keys'].items()
        if not k.endswith(buffers))
    assert params == entry['params_total'] == 14334216
    with torch.device('meta'):
        ours = RMT(arch='t', out_norm_cfg=None)
    # the classifier we drop: proj 512 -> 1024, BatchNorm(1024), head
    classifier = 512 * 1024 + 1024 + 2 * 1024 + 1024 * 1000 + 1000
    assert sum(p.numel() for p in ours.parameters()) + classifier == params


@pytest.mark.parametrize('cls', BACKBONES, ids=lambda c: c.__name__)
def test_identify_converted_layout_of_every_variant(cls):
    """Our own layout, flat and as the backbone of a whole classifier,
    built on the meta device."""
    for arch in cls.arch_settings:
        with torch.device('meta'):
            state = cls(arch=arch).state_dict()
        found = identify(state)
        assert (found.family, found.layout, found.variant) == (
            cls.__name__, 'mmvitmix', arch)
        whole = {'backbone.' + k: v for k, v in state.items()}
        whole['head.fc.weight'] = torch.empty(10, 4, device='meta')
        found = identify({'state_dict': whole, 'meta': {}})
        assert (found.family, found.variant, found.whole_model) == (
            cls.__name__, arch, True)
        assert f"arch='{arch}'" in describe_checkpoint(whole)


def _check_inferred(found, config, skip=()):
    for key, value in config.items():
        if key in skip or key in found.undetermined:
            continue
        assert found.arch.get(key) == value, (key, found.arch.get(key), value)


def test_identify_infers_small_configs_from_golden_files():
    """The golden small-config checkpoints fit no registered variant: the
    arch dict is inferred (RMT's init_values / heads_ranges from the decay
    values, which real files carry)."""
    for name, family in (('rmt_tiny_axial.pt', 'RMT'),
                         ('rmt_tiny_whole_ls.pt', 'RMT'),
                         ('rest_tiny.pt', 'ResT'),
                         ('container_tiny.pt', 'ContainerLight'),
                         ('riformer_tiny.pt', 'RIFormer')):
        data = _golden(name)
        found = identify(data['checkpoint'])
        assert found.family == family and found.variant is None, name
        _check_inferred(found, data['config'],
                        skip=('img_size', 'layer_scale_init_value',
                              'layer_init_values'))
        if family == 'RMT':
            assert found.arch['init_values'] == data['config']['init_values']
            assert found.arch['heads_ranges'] == data['config'][
                'heads_ranges']
            assert found.undetermined == ['chunkwise_recurrents']
        text = found.describe()
        assert 'arch=dict(' in text
        # the printed dict builds the backbone and the file loads into it
        arch = eval(re.search(r'arch=(dict\(.*?\))(?: \(|$)', text)[1])
        model = getattr(__import__('mmvitmix.models', fromlist=['x']),
                        FAMILIES[family][1])(arch=arch, drop_path_rate=0.)
        model.load_pretrained(data['checkpoint'])


def test_identify_restv2_fixture():
    path = PARITY / 'restv2.pt'
    if not path.is_file():
        pytest.skip('ResT v2 parity fixture missing')
    data = torch.load(path, map_location='cpu', weights_only=False)
    found = identify(data['checkpoint'])
    assert (found.family, found.layout) == ('ResTV2', 'official')
    _check_inferred(found, data['config'])
    assert found.undetermined == ['num_heads']
    assert 'num_heads: not determined' in found.describe()


def test_identify_unknown_files():
    import torchvision
    with torch.device('meta'):
        resnet = torchvision.models.resnet18().state_dict()
    assert identify(resnet) is None
    assert describe_checkpoint({'state_dict': resnet}) is None
    assert describe_checkpoint({}) is None
    assert identify({'x': 1, 'y': 'text'}) is None


# -------------------------------------------------- load_pretrained refusals
def _tiny(cls, **kwargs):
    arch = {
        RMT: dict(embed_dims=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                  num_heads=[1, 2, 2, 4], init_values=[2, 2, 2, 2],
                  heads_ranges=[4, 4, 6, 6], mlp_ratios=[3, 3, 3, 3],
                  chunkwise_recurrents=[True, True, False, False]),
        ResT: dict(embed_dims=[8, 16, 24, 32], num_heads=[1, 2, 2, 4],
                   mlp_ratios=[4, 4, 4, 4], qkv_bias=True,
                   depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1],
                   apply_transform=True),
        ResTV2: dict(embed_dims=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                     num_heads=[1, 2, 2, 4]),
        ContainerLight: dict(embed_dim=[8, 16, 24, 32], depth=[1, 1, 1, 1],
                             num_heads=4, mlp_ratio=[2, 2, 2, 2]),
        RIFormer: dict(layers=[1, 1, 1, 1], embed_dims=[8, 16, 24, 32]),
    }[cls]
    return cls(arch=arch, drop_path_rate=0., **kwargs)


@pytest.mark.parametrize('cls', BACKBONES, ids=lambda c: c.__name__)
def test_pretrained_of_another_family_is_refused_by_name(cls, tmp_path):
    """Each other family's file, in our layout and as a detector's
    backbone, given through init_cfg: refused naming what it is."""
    for other in BACKBONES:
        if other is cls:
            continue
        state = _tiny(other).state_dict()
        for name, ckpt in (('flat', state),
                           ('whole', {'state_dict': {
                               'backbone.' + k: v
                               for k, v in state.items()}})):
            path = tmp_path / f'{other.__name__}_{name}.pth'
            torch.save(ckpt, path)
            model = _tiny(cls, init_cfg=dict(type='Pretrained',
                                              checkpoint=str(path)))
            before = {k: v.clone() for k, v in model.state_dict().items()}
            with pytest.raises(ValueError) as info:
                model.init_weights()
            for key, value in model.state_dict().items():
                assert torch.equal(value, before[key]), key  # not loaded
            message = str(info.value)
            assert message.startswith(f'{cls.__name__}: {path} is ')
            assert f'{FAMILIES[other.__name__][0]} checkpoint' in message
            assert f"type='{other.__name__}'" in message
            assert f'not {FAMILIES[cls.__name__][0]}' in message


def test_pretrained_of_another_variant_names_the_arch_that_fits():
    """A file of the right family and another variant: the error names the
    arch that loads it (official layout, real tensors)."""
    data = _golden('rmt_tiny_axial.pt')
    config = dict(data['config'])
    wrong = dict(config, mlp_ratios=[4, 4, 4, 4])
    with pytest.raises(ValueError) as info:
        RMT(arch=wrong).load_pretrained(data['checkpoint'])
    message = str(info.value)
    assert 'does not fit this RMT' in message
    assert 'ffn.fc1.weight' in message  # the first mismatching tensors
    assert ('an RMT checkpoint (official layout) that fits '
            "type='RMT', arch=dict(embed_dims=[32, 64, 96, 128], "
            'depths=[1, 1, 2, 1], num_heads=[2, 2, 3, 4], init_values=[2, 2, '
            '2, 2], heads_ranges=[4, 4, 6, 6], mlp_ratios=[3, 3, 3, 3]'
            ) in message
    # deeper file, same widths: blocks the model lacks are named too
    shallow = dict(config, depths=[1, 1, 1, 1])
    with pytest.raises(ValueError, match=r'belong to blocks the model does '
                       r'not have \(first: stages\.2\.blocks\.1\.'):
        RMT(arch=shallow).load_pretrained(data['checkpoint'])
    # a registered variant is named by its name (meta: no memory)
    with torch.device('meta'):
        small = RMT(arch='s').state_dict()
        with pytest.raises(ValueError, match="fits type='RMT', arch='s'$"):
            RMT(arch='t').load_pretrained({'state_dict': small})


@pytest.mark.parametrize('cls', [RMT, ResT], ids=lambda c: c.__name__)
def test_pretrained_random_bytes_are_refused_by_name(cls, tmp_path):
    """64 random byte strings (fixed seeds): whatever torch raises while
    reading (UnpicklingError, IndexError, KeyError, ...), the error names
    the file as unreadable."""
    model = _tiny(cls)
    path = tmp_path / 'random.pth'
    seen = set()
    for seed in range(64):
        path.write_bytes(random.Random(seed).randbytes(4096))
        with pytest.raises(ValueError) as info:
            model.load_pretrained(str(path))
        message = str(info.value)
        assert message.startswith(
            f"{cls.__name__}: cannot read checkpoint '{path}': not a "
            'PyTorch checkpoint file, or a damaged one ('), message
        seen.add(message.split('(')[-1].split(':')[0])
    # the unpickler's failures vary with the bytes: all of them are caught
    assert len(seen) >= 2, seen
    with pytest.raises(FileNotFoundError,
                       match=f"{cls.__name__}: checkpoint '.*missing.pth' "
                       'does not exist'):
        model.load_pretrained(str(tmp_path / 'missing.pth'))


def test_pretrained_with_pickled_objects_says_so(tmp_path):
    """A training checkpoint that pickles its ``args`` (as the official
    training scripts save them) is not called damaged: the error says what
    torch refused and how to convert it."""
    import argparse
    path = tmp_path / 'with_args.pth'
    torch.save({'model': _tiny(RMT).state_dict(),
                'args': argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ValueError) as info:
        _tiny(RMT).load_pretrained(str(path))
    message = str(info.value)
    assert message.startswith(f"RMT: cannot read checkpoint '{path}': it "
                              'pickles Python objects besides tensors')
    assert '--allow-pickle' in message
    assert 'Unsupported global: GLOBAL argparse.Namespace)' in message
