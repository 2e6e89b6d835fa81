"""Tests of the ResT (v1) backbone and its official-checkpoint converter."""
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from mmvitmix.models.backbones import ResT, convert_rest
from mmvitmix.models.backbones import rest as rest_module
from mmvitmix.models.utils import convert_rest as convert_rest_reexport
from mmvitmix.testing import assert_close_rel
from tests.utils import tiny_arch
from .conftest import load_golden, load_golden_json
from .conftest import tiny as tiny_backbone

VARIANTS = {
    'lite': 'rest_lite',
    'small': 'rest_small',
    'base': 'rest_base',
    'large': 'rest_large'
}

TINY = tiny_arch('ResT')


def tiny(**kwargs):
    return tiny_backbone(ResT, **kwargs)


@pytest.fixture(scope='module')
def golden():
    return load_golden('rest_tiny.pt')


@pytest.fixture(scope='module')
def official():
    return load_golden_json()


def assert_rel_close(actual, expected):
    """Within 2e-5 of the tensor's scale.

    2e-5, not 1e-5: the golden stage-4 output of the official float32 code is
    itself 9.5e-6 (relative) from the same model run in float64, and every
    mmvitmix backend lands within 8.2e-6 of that float64 result, so two
    correct float32 paths may differ by up to about 1.8e-5. A wrong mapping
    shows as O(1).
    """
    assert_close_rel(actual, expected, 2e-5)


# ----------------------------------------------------------------- parity
def test_golden_parity(golden):
    """Converted official weights reproduce the official stage outputs."""
    model = ResT(
        arch=golden['config'], out_norm_cfg=None, drop_path_rate=0.)
    result = model.load_pretrained(golden['checkpoint'])
    # norm.* -> norm3, which this model (no output norms) lacks
    assert result['missing'] == []
    assert sorted(result['unexpected']) == ['norm3.bias', 'norm3.weight']
    model.eval()
    with torch.no_grad():
        outs = model(golden['input'])
    assert len(outs) == 4
    for out, ref in zip(outs, golden['stage_outputs']):
        assert_rel_close(out, ref)

    # the ImageNet model's final norm becomes the stage-4 output norm
    normed = ResT(arch=golden['config'], out_indices=3, drop_path_rate=0.)
    result = normed.load_pretrained(golden['checkpoint'])
    assert result == dict(missing=[], unexpected=[], fresh=[])
    normed.eval()
    with torch.no_grad():
        (out, ) = normed(golden['input'])
    assert_rel_close(out, golden['stage4_after_norm'])


def test_golden_side_branch_norms(golden):
    """Output norms do not change the main path (unlike detectron2's)."""
    plain = ResT(arch=golden['config'], out_norm_cfg=None, drop_path_rate=0.)
    plain.load_pretrained(golden['checkpoint'])
    normed = ResT(arch=golden['config'], drop_path_rate=0.)
    result = normed.load_pretrained(golden['checkpoint'])
    assert sorted(result['fresh']) == [
        f'norm{i}.{p}' for i in range(3) for p in ('bias', 'weight')
    ]
    for i in range(3):
        norm = getattr(normed, f'norm{i}')
        nn.init.normal_(norm.weight)
        nn.init.normal_(norm.bias)
    plain.eval()
    normed.eval()
    with torch.no_grad():
        raw = plain(golden['input'])
        outs = normed(golden['input'])
    assert_rel_close(outs[3], golden['stage4_after_norm'])
    for i in range(4):
        norm = getattr(normed, f'norm{i}')
        expected = norm(raw[i].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        assert_rel_close(outs[i], expected)


def test_attention_goes_through_seam(golden, monkeypatch):
    calls = []
    original = rest_module.emsa_attention

    def spy(q, k, v, scale, weight, bias, eps, backend=None):
        calls.append(None if weight is None else tuple(weight.shape))
        return original(q, k, v, scale, weight, bias, eps, backend=backend)

    monkeypatch.setattr(rest_module, 'emsa_attention', spy)
    model = ResT(arch=golden['config'], out_norm_cfg=None, drop_path_rate=0.)
    model.load_pretrained(golden['checkpoint'])
    model.eval()
    with torch.no_grad():
        outs = model(golden['input'])
    # one call per block; the 1-head stage has no head transform
    assert calls == [None, (2, 2), (4, 4), (4, 4), (8, 8)]
    assert_rel_close(outs[3], golden['stage_outputs'][3])


# ------------------------------------------------------ official variants
@pytest.mark.parametrize('arch', sorted(VARIANTS))
def test_official_keys_and_params(arch, official):
    info = official[VARIANTS[arch]]
    assert ResT.arch_settings[arch] == info['config']
    # full size, shapes only: built on the meta device (no memory, no init)
    with torch.device('meta'):
        model = ResT(arch=arch, out_indices=3)
        full = ResT(arch=arch)
    target = model.state_dict()
    zeros = {
        k: torch.zeros(shape)
        for k, shape in info['checkpoint_keys'].items()
    }
    converted = convert_rest({'model': zeros})
    head = [k for k in zeros if k.startswith('head.')]
    assert sorted(head) == ['head.bias', 'head.weight']
    # every key is converted, except the classification head
    assert len(converted) == len(zeros) - len(head)
    for key, value in converted.items():
        assert key in target, f'{key} has no place in ResT'
        assert tuple(value.shape) == tuple(target[key].shape), key
    assert sorted(set(target) - set(converted)) == []

    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == info['params_no_head']
    assert info['params_total'] - info['params_no_head'] == sum(
        zeros[k].numel() for k in head)
    # each extra output norm adds one LayerNorm
    n_full = sum(p.numel() for p in full.parameters())
    dims = ResT.arch_settings[arch]['embed_dims']
    assert n_full == info['params_no_head'] + 2 * sum(dims[:3])


def test_converter_layouts(golden):
    ckpt = golden['checkpoint']['model']
    converted = convert_rest(ckpt)
    assert convert_rest_reexport is convert_rest
    # idempotent on the mmvitmix layout, also under a backbone prefix
    assert convert_rest(converted) == converted
    prefixed = {'backbone.' + k: v for k, v in converted.items()}
    assert convert_rest(prefixed) == converted
    # detectron2 layout: backbone.bottom_up.* with per-stage norm1..3
    d2 = {'backbone.bottom_up.' + k: v for k, v in ckpt.items()}
    for k in (1, 2, 3):
        dims = golden['config']['embed_dims'][k - 1]
        d2[f'backbone.bottom_up.norm{k}.weight'] = torch.full((dims, ), 2.)
        d2[f'backbone.bottom_up.norm{k}.bias'] = torch.full((dims, ), 3.)
    out = convert_rest(d2)
    for k in (1, 2, 3):
        assert torch.equal(out[f'norm{k - 1}.weight'],
                           d2[f'backbone.bottom_up.norm{k}.weight'])
    assert torch.equal(out['norm3.weight'], ckpt['norm.weight'])
    assert torch.equal(out['stem.pa.conv.weight'],
                       ckpt['stem.pos.pa_conv.weight'])
    assert torch.equal(out['stages.1.patch_embed.pa.conv.bias'],
                       ckpt['patch_embed_2.pos.pa_conv.bias'])
    assert torch.equal(out['stages.2.blocks.1.ffn.fc1.weight'],
                       ckpt['stage3.1.mlp.fc1.weight'])
    assert 'head.weight' not in out
    # a key that no rule covers is an error, not silently dropped
    with pytest.raises(KeyError, match='foo.bar'):
        convert_rest(dict(ckpt, **{'foo.bar': torch.zeros(1)}))
    with pytest.raises(KeyError, match='patch_embed_2.extra'):
        convert_rest(dict(ckpt, **{'patch_embed_2.extra.w': torch.zeros(1)}))


# ---------------------------------------------------------- construction
def test_apply_transform_and_arch_names():
    """(Registries, output channels and strides: every backbone,
    test_contract.py.)"""
    model = tiny()
    # no head interaction when apply_transform is off
    plain = ResT(arch=dict(TINY, apply_transform=False))
    assert not any('transform_conv' in k for k in plain.state_dict())
    assert 'stages.1.blocks.0.attn.transform_conv.weight' in (
        model.state_dict())
    assert 'stages.0.blocks.0.attn.transform_conv.weight' not in (
        model.state_dict())
    # names are case-insensitive
    assert ResT(arch='LITE').arch == ResT.arch_settings['lite']


def test_bad_arch_arguments():
    """ResT's arch checks (inputs, unknown arguments, out_indices: every
    backbone, test_contract.py; common arguments: test_reliability.py)."""
    with pytest.raises(ValueError, match=r"unknown arch 'tiny'.*'base'"):
        ResT(arch='tiny')
    bad = dict(TINY)
    del bad['sr_ratios']
    with pytest.raises(ValueError, match=r"missing keys \['sr_ratios'\]"):
        ResT(arch=bad)
    with pytest.raises(ValueError, match='unknown keys'):
        ResT(arch=dict(TINY, qk_scale=None))
    with pytest.raises(ValueError, match='depths'):
        ResT(arch=dict(TINY, depths=[1, 1, 1]))
    with pytest.raises(ValueError, match='heads'):
        ResT(arch=dict(TINY, num_heads=[1, 3, 3, 4]))


@pytest.mark.parametrize('size', [(97, 161), (32, 32), (33, 45)])
def test_odd_input_sizes(size):
    model = tiny()
    model.eval()
    h, w = size
    outs = model(torch.randn(1, 3, h, w))
    shapes = []
    h, w = (h + 1) // 2, (w + 1) // 2  # stem conv1 (stride 2)
    for _ in range(4):
        h, w = (h + 1) // 2, (w + 1) // 2
        shapes.append((h, w))
    assert [tuple(o.shape[-2:]) for o in outs] == shapes
    assert all(torch.isfinite(o).all() for o in outs)


# -------------------------------------------------------------- training
def test_every_parameter_gets_a_gradient():
    model = tiny()
    model.train()
    outs = model(torch.randn(2, 3, 64, 64))
    sum(o.square().mean() for o in outs).backward()
    shift_only = []
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        if name.endswith('attn.transform_conv.bias'):
            # adds the same value to a whole softmax row: no effect on the
            # output (as officially), so its gradient is zero up to rounding
            shift_only.append(name)
            assert param.grad.abs().max() < 1e-6, name
        else:
            assert param.grad.abs().sum() > 0, name
    assert len(shift_only) == 4  # stages 1-3 (stage 0 has one head)


# --------------------------------------------------------------- loading
def test_pretrained_init_cfg(golden, tmp_path):
    ckpt = copy.deepcopy(golden['checkpoint'])
    path = tmp_path / 'rest_official.pth'
    torch.save(ckpt, path)
    model = ResT(
        arch=golden['config'],
        drop_path_rate=0.,
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    converted = convert_rest(ckpt)
    state = model.state_dict()
    for key, value in converted.items():
        assert torch.equal(state[key], value), key

    # a damaged file: the loader reports what is missing and unexpected
    sd = ckpt['model']
    del sd['stage2.0.attn.q.weight']
    sd['stage2.0.attn.extra'] = torch.zeros(3)
    model = ResT(arch=golden['config'], drop_path_rate=0.)
    result = model.load_pretrained(ckpt)
    assert result['missing'] == ['stages.1.blocks.0.attn.q.weight']
    assert result['unexpected'] == ['stages.1.blocks.0.attn.extra']
    assert sorted(result['fresh']) == [
        f'norm{i}.{p}' for i in range(3) for p in ('bias', 'weight')
    ]

    with pytest.raises(ValueError, match='unknown keys'):
        ResT(
            arch=golden['config'],
            init_cfg=dict(
                type='Pretrained', checkpoint=str(path),
                strict=True)).init_weights()


@pytest.mark.slow  # converter CLI in subprocesses
def test_converter_cli(golden, tmp_path):
    repo = Path(__file__).resolve().parents[3]
    src = tmp_path / 'rest_official.pth'
    torch.save(golden['checkpoint'], src)
    dst = tmp_path / 'out' / 'rest_mmvitmix.pth'
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(repo)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    proc = subprocess.run([
        sys.executable,
        str(repo / 'tools' / 'model_converters' / 'rest2mmvitmix.py'),
        str(src),
        str(dst)
    ],
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = torch.load(dst, map_location='cpu')
    assert out['meta']['dropped_keys'] == ['head.bias', 'head.weight']
    converted = out['state_dict']
    assert converted.keys() == convert_rest(golden['checkpoint']).keys()
    model = ResT(
        arch=golden['config'],
        out_indices=3,
        init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    state = model.state_dict()
    assert state.keys() == converted.keys()
    for key, value in converted.items():
        assert torch.equal(state[key], value), key
