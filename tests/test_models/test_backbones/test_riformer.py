"""RIFormer backbone: parity with MMPretrain, re-parameterisation, conversion,
options and errors."""
import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from mmvitmix.models.backbones.riformer import (RIFormer, RIFormerBlock,
                                                convert_riformer)
from mmvitmix.testing import assert_close_rel
from tests.utils import REPO_ROOT, tiny_arch, zeros_like_table
from .conftest import load_golden, load_golden_json

TINY = tiny_arch('RIFormer')
VARIANTS = ['s12', 's24', 's36', 'm36', 'm48']


def load_riformer_golden():
    return load_golden('riformer_tiny.pt')


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random values for every float parameter (norm weights and layer
    scales included, so that every term of the fold is exercised)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model


def num_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope='module')
def official_tables():
    return load_golden_json()


# ------------------------------------------------------------ golden parity
def test_golden_normed_and_deploy_outputs():
    golden = load_riformer_golden()
    model = RIFormer(arch=golden['config']).eval()
    report = model.load_pretrained(golden['checkpoint'])
    assert report == dict(missing=[], unexpected=[], fresh=[])
    with torch.no_grad():
        outs = model(golden['input'])
    assert len(outs) == 4
    for out, ref in zip(outs, golden['normed_outputs']):
        assert_close_rel(out, ref, 1e-5)

    n_before = num_params(model)
    assert model.switch_to_deploy() is model
    assert model.deploy
    assert not any('token_mixer' in k or '.norm1.' in k
                   for k in model.state_dict())
    dims = golden['config']['embed_dims']
    layers = golden['config']['layers']
    assert n_before - num_params(model) == sum(
        2 * c * n for c, n in zip(dims, layers))
    with torch.no_grad():
        outs = model(golden['input'])
    for out, ref in zip(outs, golden['deploy_outputs']):
        assert_close_rel(out, ref, 1e-5)

    # MMPretrain's deploy state dict is ours after conversion
    expected = convert_riformer(golden['deploy_state_dict'])
    ours = model.state_dict()
    assert set(ours) == set(expected)
    for key, value in expected.items():
        assert ours[key].shape == value.shape, key
        assert_close_rel(ours[key], value, 1e-6)


def test_golden_mismatch_is_detected():
    """A wrong fold (mixer weight not minus 1) must break parity."""
    golden = load_riformer_golden()
    state = convert_riformer(golden['checkpoint'])
    state['stages.0.blocks.0.token_mixer.weight'] += 1
    model = RIFormer(arch=golden['config']).eval()
    model.load_state_dict(state)
    with torch.no_grad():
        out = model(golden['input'])[0]
    err = (out - golden['normed_outputs'][0]).abs().max()
    assert err > 1e-2


def test_deploy_backbone_loads_either_structure():
    golden = load_riformer_golden()
    train_sd = convert_riformer(golden['checkpoint'])
    deploy_sd = convert_riformer(golden['deploy_state_dict'])
    assert any('token_mixer' in k for k in train_sd)
    assert not any('token_mixer' in k for k in deploy_sd)

    # deploy structure from the start, deploy weights
    model = RIFormer(arch=golden['config'], deploy=True).eval()
    assert not any('token_mixer' in k for k in model.state_dict())
    model.load_state_dict(deploy_sd, strict=True)
    with torch.no_grad():
        for out, ref in zip(model(golden['input']), golden['deploy_outputs']):
            assert_close_rel(out, ref, 1e-5)

    # deploy structure, training weights: folded while loading
    model = RIFormer(arch=golden['config'], deploy=True).eval()
    report = model.load_pretrained(golden['checkpoint'])
    assert report == dict(missing=[], unexpected=[], fresh=[])
    with torch.no_grad():
        for out, ref in zip(model(golden['input']), golden['deploy_outputs']):
            assert_close_rel(out, ref, 1e-5)

    # training structure, deploy weights: unfolded exactly (mixer = 2y - y)
    model = RIFormer(arch=golden['config']).eval()
    model.load_state_dict(deploy_sd, strict=True)
    assert torch.equal(model.stages[0].blocks[0].token_mixer.weight,
                       torch.full((golden['config']['embed_dims'][0], ), 2.))
    with torch.no_grad():
        for out, ref in zip(model(golden['input']), golden['normed_outputs']):
            assert_close_rel(out, ref, 1e-5)


def test_init_cfg_pretrained_from_mmpretrain_file(tmp_path):
    golden = load_riformer_golden()
    path = tmp_path / 'riformer_mmpretrain.pth'
    ckpt = copy.deepcopy(golden['checkpoint'])
    # a classification release also carries the head: dropped on purpose
    ckpt['state_dict']['head.fc.weight'] = torch.zeros(10, 128)
    ckpt['state_dict']['head.fc.bias'] = torch.zeros(10)
    torch.save(ckpt, path)
    for deploy, key in ((False, 'normed_outputs'), (True, 'deploy_outputs')):
        model = RIFormer(
            arch=golden['config'],
            deploy=deploy,
            init_cfg=dict(type='Pretrained', checkpoint=str(path)))
        model.init_weights()
        model.eval()
        with torch.no_grad():
            for out, ref in zip(model(golden['input']), golden[key]):
                assert_close_rel(out, ref, 1e-5)


# ---------------------------------------------- full-size official tables
@pytest.mark.parametrize('variant', VARIANTS)
def test_official_table_converts_completely(variant, official_tables):
    table = official_tables[f'riformer_{variant}']
    assert table['arch'] == variant
    # MMPretrain's classification backbone returns the last stage (norm6)
    model = RIFormer(arch=variant, out_indices=3)
    assert num_params(model) == table['params_total']
    converted = convert_riformer(zeros_like_table(table['checkpoint_keys']))
    ours = model.state_dict()
    assert len(converted) == len(table['checkpoint_keys'])
    assert set(converted) == set(ours), (
        sorted(set(converted) ^ set(ours))[:10])
    for key, value in converted.items():
        assert tuple(value.shape) == tuple(ours[key].shape), key
    report = model.load_pretrained({'state_dict': converted})
    assert report == dict(missing=[], unexpected=[], fresh=[])


@pytest.mark.parametrize('variant', ['s12'])
def test_official_table_loads_into_deploy_backbone(variant, official_tables):
    table = official_tables[f'riformer_{variant}']
    model = RIFormer(arch=variant, out_indices=(0, 1, 2, 3), deploy=True)
    state = zeros_like_table(table['checkpoint_keys'])
    state = {'backbone.' + k: v for k, v in state.items()}
    report = model.load_pretrained({'state_dict': state})
    assert report['missing'] == [] and report['unexpected'] == []
    assert sorted(report['fresh']) == sorted(
        f'norm{i}.{p}' for i in range(3) for p in ('weight', 'bias'))


def test_arch_settings_match_mmpretrain():
    mmpretrain_riformer = pytest.importorskip(
        'mmpretrain.models.backbones.riformer')
    assert RIFormer.arch_settings == \
        mmpretrain_riformer.RIFormer.arch_settings


# --------------------------------------------- MMPretrain's own module
@pytest.mark.parametrize('deploy_at_build', [False, True])
def test_same_outputs_as_mmpretrain(deploy_at_build):
    mmp = pytest.importorskip('mmpretrain.models.backbones.riformer')
    ref = randomize_(mmp.RIFormer(arch=copy.deepcopy(TINY),
                                  out_indices=[0, 2, 4, 6])).eval()
    train_sd = copy.deepcopy(ref.state_dict())
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref_train = ref(x)
    ref.switch_to_deploy()
    with torch.no_grad():
        ref_deploy = ref(x)
    deploy_sd = ref.state_dict()

    ours = RIFormer(arch=TINY).eval()
    assert num_params(ours) == sum(p.numel() for p in train_sd.values())
    ours.load_state_dict(convert_riformer(train_sd), strict=True)
    with torch.no_grad():
        outs = ours(x)
    assert len(outs) == 4
    for out, expected in zip(outs, ref_train):
        assert_close_rel(out, expected, 1e-5)

    if deploy_at_build:
        ours = RIFormer(arch=TINY, deploy=True).eval()
        ours.load_state_dict(convert_riformer(deploy_sd), strict=True)
    else:
        ours.switch_to_deploy()
        for key, value in convert_riformer(deploy_sd).items():
            assert_close_rel(ours.state_dict()[key], value, 1e-6)
    assert num_params(ours) == sum(p.numel() for p in deploy_sd.values())
    with torch.no_grad():
        outs = ours(x)
    for out, expected in zip(outs, ref_deploy):
        assert_close_rel(out, expected, 1e-5)
    # and the deploy output equals the training output
    for out, expected in zip(outs, ref_train):
        assert_close_rel(out, expected, 1e-5)


@pytest.mark.slow  # subprocess / full classifier
def test_mmpretrain_image_classifier_config_runs():
    pytest.importorskip('mmpretrain')
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    cfg = Config.fromfile(
        str(REPO_ROOT / 'configs' / 'riformer' / 'riformer_s12_in1k_cls.py'))
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.model.backbone.type == 'mmvitmix.RIFormer'
    init_default_scope('mmpretrain')
    cfg.model.head.num_classes = 10
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'ImageClassifier'
    assert isinstance(model.backbone, RIFormer)
    model.init_weights()
    x = torch.randn(2, 3, 64, 64)
    model.train()
    samples = [DataSample().set_gt_label(i) for i in (1, 7)]
    losses = model(x, samples, mode='loss')
    assert torch.isfinite(losses['loss'])
    losses['loss'].backward()
    assert model.backbone.stem.weight.grad is not None
    model.eval()
    with torch.no_grad():
        logits = model(x, mode='tensor')
        assert logits.shape == (2, 10)
        model.backbone.switch_to_deploy()
        logits_deploy = model(x, mode='tensor')
    assert_close_rel(logits_deploy, logits, 1e-5)


# ------------------------------------------------------------ structure
def test_block_structure():
    model = RIFormer(arch=TINY)
    block = model.stages[1].blocks[0]
    assert isinstance(block.norm1, nn.GroupNorm)
    assert block.norm1.num_groups == 1
    assert model.stem.kernel_size == (7, 7) and model.stem.stride == (4, 4)
    assert model.stem.padding == (2, 2)
    ds = model.stages[1].downsample
    assert ds.kernel_size == (3, 3) and ds.stride == (2, 2)
    assert model.stages[0].downsample is None
    assert torch.allclose(block.gamma1, torch.full((24, ), 1e-5))
    assert isinstance(model.norm3, nn.GroupNorm)


def test_no_out_norm():
    model = RIFormer(arch=TINY, out_norm_cfg=None).eval()
    assert not any(n.startswith('norm') for n, _ in model.named_children())
    normed = RIFormer(arch=TINY).eval()
    normed.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        raw = model(x)[2]
        gn = nn.functional.group_norm(raw, 1, eps=1e-5)
        assert_close_rel(normed(x)[2], gn, 1e-5)


def test_switch_to_deploy_random_weights_and_idempotent():
    model = randomize_(RIFormer(arch=TINY)).eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        before = model(x)
    model.switch_to_deploy()
    model.switch_to_deploy()  # idempotent
    with torch.no_grad():
        after = model(x)
    for a, b in zip(after, before):
        assert_close_rel(a, b, 1e-5)
    for stage in model.stages:
        for block in stage.blocks:
            assert block.deploy and not hasattr(block, 'token_mixer')
    assert all(p.requires_grad for p in model.parameters())


def test_deploy_with_batchnorm_norms_keeps_running_stats():
    """The fold holds for any per-channel-affine norm (BN: running stats)."""
    model = RIFormer(arch=TINY, norm_cfg=dict(type='BN'))
    randomize_(model)
    model.train()
    with torch.no_grad():  # populate running statistics
        model(torch.randn(4, 3, 64, 64))
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        model.switch_to_deploy()
        after = model(x)
    for a, b in zip(after, before):
        assert_close_rel(a, b, 1e-5)
    assert isinstance(model.stages[0].blocks[0].norm_reparam, nn.BatchNorm2d)


def test_frozen_stages_survive_switch_to_deploy():
    """The folded norms of frozen stages stay frozen (freezing itself:
    every backbone, test_contract.py)."""
    model = RIFormer(arch=TINY, frozen_stages=2)
    model.train()
    model.switch_to_deploy()
    assert not model.stages[1].blocks[0].norm_reparam.weight.requires_grad
    assert not model.stages[1].blocks[0].norm_reparam.training
    assert model.stages[2].blocks[0].norm_reparam.weight.requires_grad


def test_drop_path_rate():
    model = RIFormer(arch=TINY, drop_path_rate=0.3)
    rates = [
        getattr(b.drop_path, 'drop_prob', 0.) for s in model.stages
        for b in s.blocks
    ]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.3)
    assert rates == sorted(rates)
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        a, b = model(x)[3], model(x)[3]
    assert torch.equal(a, b)


# ------------------------------------------------------------ conversion
def test_converter_rules():
    golden = load_riformer_golden()
    sd = dict(golden['checkpoint']['state_dict'])
    sd['head.fc.weight'] = torch.zeros(10, 128)
    sd['bbox_head.retina_cls.weight'] = torch.zeros(9, 256, 3, 3)
    out = convert_riformer({'state_dict': sd})
    assert not any(k.startswith(('head', 'bbox_head')) for k in out)
    assert len(out) == len(sd) - 2
    assert out['stem.weight'] is sd['backbone.patch_embed.proj.weight']
    assert torch.equal(out['stages.2.downsample.weight'],
                       sd['backbone.network.3.proj.weight'])
    assert torch.equal(out['norm3.bias'], sd['backbone.norm6.bias'])
    assert torch.equal(
        out['stages.2.blocks.1.token_mixer.weight'],
        sd['backbone.network.4.1.token_mixer.affine.weight'].reshape(-1))
    assert torch.equal(out['stages.3.blocks.0.gamma2'],
                       sd['backbone.network.6.0.layer_scale_2'])
    assert torch.equal(out['stages.1.blocks.0.ffn.fc1.weight'],
                       sd['backbone.network.2.0.mlp.fc1.weight'])
    # already converted: unchanged
    again = convert_riformer(out)
    assert again.keys() == out.keys()
    # norms after MMPretrain's downsampling (odd positions): dropped
    extra = dict(sd, **{'backbone.norm3.weight': torch.ones(96)})
    assert 'norm3.weight' in convert_riformer(extra)
    assert torch.equal(convert_riformer(extra)['norm3.weight'],
                       sd['backbone.norm6.weight'])


@pytest.mark.parametrize('bad_key', [
    'backbone.network.4.0.token_mixer.pool.weight',
    'backbone.network.2.proj.weight', 'backbone.cls_token',
    'backbone.norm8.weight'
])
def test_converter_rejects_unknown_keys(bad_key):
    golden = load_riformer_golden()
    sd = dict(golden['checkpoint']['state_dict'])
    sd[bad_key] = torch.zeros(1)
    with pytest.raises(KeyError, match='convert_riformer'):
        convert_riformer(sd)


@pytest.mark.slow  # subprocess / full classifier
def test_converter_cli(tmp_path):
    golden = load_riformer_golden()
    src = tmp_path / 'src.pth'
    ckpt = copy.deepcopy(golden['checkpoint'])
    ckpt['state_dict']['head.fc.weight'] = torch.zeros(10, 128)
    torch.save(ckpt, src)
    dst = tmp_path / 'out' / 'riformer.pth'
    proc = subprocess.run([
        sys.executable,
        str(REPO_ROOT / 'tools' / 'model_converters' /
            'riformer2mmvitmix.py'),
        str(src), str(dst)
    ],
                          capture_output=True,
                          text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = torch.load(dst, map_location='cpu')
    assert out['meta']['dropped_keys'] == ['head.fc.weight']
    model = RIFormer(arch=golden['config']).eval()
    model.load_state_dict(out['state_dict'], strict=True)
    with torch.no_grad():
        for o, ref in zip(model(golden['input']), golden['normed_outputs']):
            assert_close_rel(o, ref, 1e-5)


# ---------------------------------------------------------------- errors
def test_bad_arch_and_norm_arguments():
    """RIFormer's own checks (inputs, unknown arguments, out_indices: every
    backbone, test_contract.py; common arguments and arch values:
    test_reliability.py)."""
    with pytest.raises(ValueError, match=r"unknown arch 'xx'.*'s12'"):
        RIFormer(arch='xx')
    with pytest.raises(ValueError, match='missing keys'):
        RIFormer(arch=dict(layers=[1, 1, 1, 1]))
    with pytest.raises(ValueError, match='unknown keys'):
        RIFormer(arch=dict(TINY, pool_size=3))
    with pytest.raises(ValueError, match='4 entries'):
        RIFormer(arch=dict(TINY, layers=[1, 1, 1]))
    with pytest.raises(ValueError, match='per-channel affine'):
        RIFormer(arch=TINY, norm_cfg=dict(type='GN', num_groups=1,
                                          affine=False))


def test_block_standalone_deploy_equivalence():
    block = randomize_(
        RIFormerBlock(8, 4, dict(type='GN', num_groups=1),
                      dict(type='GELU'))).eval()
    x = torch.randn(2, 8, 5, 7)
    with torch.no_grad():
        ref = block(x)
        block.switch_to_deploy()
        out = block(x)
    assert_close_rel(out, ref, 1e-5)
