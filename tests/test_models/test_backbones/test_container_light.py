"""Tests of the Container-Light backbone and its official-checkpoint
converter."""
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from mmvitmix.models.backbones import ContainerLight, convert_container
from mmvitmix.models.backbones import container_light as container_module
from mmvitmix.models.utils import convert_container as convert_reexport
from mmvitmix.testing import assert_close_rel as assert_rel_close
from tests.utils import tiny_arch
from .conftest import load_golden, load_golden_json
from .conftest import tiny as tiny_backbone

REPO = Path(__file__).resolve().parents[3]

TINY = tiny_arch('ContainerLight')


def tiny(**kwargs):
    return tiny_backbone(ContainerLight, **kwargs)


def official_arch(config):
    """The golden constructor arguments minus ``img_size`` (224-only)."""
    return {k: v for k, v in config.items() if k != 'img_size'}


def randomize_bn(model, seed=0):
    """Give BatchNorms non-trivial running stats so eval mode matters."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(
                torch.rand(m.num_features, generator=gen) + 0.5)


@pytest.fixture(scope='module')
def golden():
    return load_golden('container_tiny.pt')


@pytest.fixture(scope='module')
def official():
    return load_golden_json()['container_light']


# ----------------------------------------------------------------- parity
@pytest.mark.parametrize('patch_padding', ['corner', None])
def test_golden_parity(golden, patch_padding):
    """Converted official weights reproduce the official stage outputs."""
    arch = official_arch(golden['config'])
    model = ContainerLight(
        arch=arch,
        out_norm_cfg=None,
        drop_path_rate=0.,
        patch_padding=patch_padding)
    result = model.load_pretrained(golden['checkpoint'])
    # the final BatchNorm (norm.* -> norm3) has no place and is dropped
    assert result == dict(missing=[], unexpected=[], fresh=[])
    model.eval()
    with torch.no_grad():
        outs = model(golden['input'])
    assert len(outs) == 4
    for out, ref in zip(outs, golden['stage_outputs']):
        assert_rel_close(out, ref)

    # the ImageNet model's final BatchNorm becomes the stage-4 output norm
    normed = ContainerLight(arch=arch, out_indices=3, drop_path_rate=0.)
    result = normed.load_pretrained(golden['checkpoint'])
    assert result == dict(missing=[], unexpected=[], fresh=[])
    normed.eval()
    with torch.no_grad():
        (out, ) = normed(golden['input'])
    assert_rel_close(out, golden['stage4_after_norm'])


def test_golden_output_norms(golden):
    """norm0-2 start fresh, norm3 is the official BN; main path unchanged."""
    arch = official_arch(golden['config'])
    model = ContainerLight(arch=arch, drop_path_rate=0.)
    result = model.load_pretrained(golden['checkpoint'])
    assert result['missing'] == [] and result['unexpected'] == []
    # (BatchNorm fills a missing num_batches_tracked itself)
    assert sorted(result['fresh']) == sorted(
        f'norm{i}.{p}' for i in range(3)
        for p in ('weight', 'bias', 'running_mean', 'running_var'))
    randomize_bn(model.norm0, 1)
    randomize_bn(model.norm1, 2)
    model.eval()
    with torch.no_grad():
        outs = model(golden['input'])
    assert_rel_close(outs[3], golden['stage4_after_norm'])
    for i in range(3):
        expected = getattr(model, f'norm{i}')(golden['stage_outputs'][i])
        assert_rel_close(outs[i], expected)
    # an LN output norm normalises over channels; the BN weights of the
    # official final norm are then not loaded into it
    ln = ContainerLight(
        arch=arch, out_norm_cfg=dict(type='LN'), drop_path_rate=0.)
    result = ln.load_pretrained(golden['checkpoint'])
    assert result['unexpected'] == []
    assert sorted(result['fresh']) == sorted(
        f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias'))
    nn.init.normal_(ln.norm3.weight)
    ln.eval()
    with torch.no_grad():
        outs = ln(golden['input'])
        raw = golden['stage_outputs'][3]
        expected = F.layer_norm(
            raw.permute(0, 2, 3, 1), (raw.shape[1], ), ln.norm3.weight,
            ln.norm3.bias, ln.norm3.eps).permute(0, 3, 1, 2)
    assert_rel_close(outs[3], expected)


# ------------------------------------------------------------------- SDPA
def test_sdpa_equals_explicit_attention_float64():
    gen = torch.Generator().manual_seed(0)
    for shape in [(2, 4, 35, 8), (1, 16, 50, 32), (3, 1, 1, 16)]:
        q, k, v = (
            torch.randn(shape, generator=gen, dtype=torch.float64) * 3
            for _ in range(3))
        fused = container_module.container_attention(q, k, v)
        explicit = container_module.container_attention_reference(q, k, v)
        torch.testing.assert_close(fused, explicit, rtol=1e-12, atol=1e-12)


def test_mixed_block_uses_sdpa_and_matches_explicit(monkeypatch):
    """The stage-4 block calls SDPA; swapping in the explicit N×N form
    gives the same block output and gradients (float64)."""
    torch.manual_seed(0)
    block = container_module.MixedAffinityBlock(
        embed_dims=32, num_heads=4, mlp_ratio=2, drop_path=0.,
        norm_cfg=dict(type='BN')).double()
    nn.init.normal_(block.mix_weight)
    randomize_bn(block)
    block.eval()
    x = torch.randn(2, 32, 5, 7, dtype=torch.float64, requires_grad=True)

    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        calls.append(tuple(q.shape))
        assert q.stride(-1) == 1 and k.stride(-1) == 1 and v.stride(-1) == 1
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, 'scaled_dot_product_attention', spy)
    out_fused = block(x)
    assert calls == [(2, 4, 35, 8)]
    (grad_fused, ) = torch.autograd.grad(out_fused.square().sum(), x)

    monkeypatch.setattr(container_module, 'container_attention',
                        container_module.container_attention_reference)
    out_explicit = block(x)
    assert len(calls) == 1  # the explicit form does not call SDPA
    (grad_explicit, ) = torch.autograd.grad(out_explicit.square().sum(), x)
    torch.testing.assert_close(out_fused, out_explicit, rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(grad_fused, grad_explicit, rtol=1e-10,
                               atol=1e-10)


def test_mixed_block_definition(golden):
    """Stage 4 written out by hand from the official definition."""
    torch.manual_seed(0)
    block = container_module.MixedAffinityBlock(
        embed_dims=24, num_heads=3, mlp_ratio=2, drop_path=0.,
        norm_cfg=dict(type='BN')).double()
    nn.init.normal_(block.mix_weight)
    randomize_bn(block)
    block.eval()
    x = torch.randn(2, 24, 4, 6, dtype=torch.float64)
    with torch.no_grad():
        out = block(x)
        x1 = x + block.pos_embed(x)
        qkv = block.qkv(block.norm1(x1))
        q, k, v = qkv.split(24, dim=1)
        heads = []
        for h in range(3):
            sl = slice(8 * h, 8 * (h + 1))
            qh, kh, vh = (t[:, sl].flatten(2).transpose(1, 2)
                          for t in (q, k, v))  # (B, HW, 8)
            attn = torch.softmax(qh @ kh.transpose(1, 2) / 8**0.5, dim=-1)
            heads.append((attn @ vh).transpose(1, 2).reshape(2, 8, 4, 6))
        sa = torch.cat(heads, dim=1)
        conv = block.local(v)
        w = torch.sigmoid(block.mix_weight)
        x2 = x1 + block.proj_out(w * sa + (1 - w) * conv)
        expected = x2 + block.mlp(block.norm2(x2))
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------ official variants
def test_official_keys_and_params(official):
    assert ContainerLight.arch_settings['light'] == official_arch(
        official['config'])
    model = ContainerLight(arch='light', out_indices=3)
    target = model.state_dict()
    zeros = {
        k: torch.zeros(shape)
        for k, shape in official['checkpoint_keys'].items()
    }
    converted = convert_container({'model': zeros})
    head = sorted(k for k in zeros if k.startswith('head.'))
    assert head == ['head.bias', 'head.weight']
    # every key is converted, except the classification head
    assert len(converted) == len(zeros) - len(head)
    for key, value in converted.items():
        assert key in target, f'{key} has no place in ContainerLight'
        assert tuple(value.shape) == tuple(target[key].shape), key
    assert sorted(set(target) - set(converted)) == []
    result = model.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == official['params_no_head'] == 20120643
    assert official['params_total'] - official['params_no_head'] == sum(
        zeros[k].numel() for k in head)
    # each extra output norm adds one BatchNorm (weight + bias)
    full = ContainerLight(arch='light')
    n_full = sum(p.numel() for p in full.parameters())
    assert n_full == official['params_no_head'] + 2 * (64 + 128 + 320)
    # stage 4 is the mixed block, 16 heads of 32 channels
    block = full.stages[3].blocks[0]
    assert isinstance(block, container_module.MixedAffinityBlock)
    assert block.num_heads == 16
    assert [len(s.blocks) for s in full.stages] == [3, 4, 8, 3]


def test_converter_layouts(golden):
    ckpt = golden['checkpoint']['model']
    converted = convert_container(golden['checkpoint'])
    assert convert_reexport is convert_container
    assert ContainerLight.converter is convert_container
    # idempotent on the mmvitmix layout, also under a backbone prefix
    assert convert_container(converted) == converted
    prefixed = {'backbone.' + k: v for k, v in converted.items()}
    assert convert_container(prefixed) == converted
    assert convert_container({'backbone.' + k: v
                              for k, v in ckpt.items()}).keys() == (
                                  converted.keys())
    pairs = {
        'stages.0.patch_embed.proj.weight': 'patch_embed1.proj.weight',
        'stages.3.patch_embed.norm.bias': 'patch_embed4.norm.bias',
        'stages.0.blocks.0.proj_in.weight': 'blocks1.0.conv1.weight',
        'stages.0.blocks.0.affinity.weight': 'blocks1.0.attn.weight',
        'stages.2.blocks.1.proj_out.bias': 'blocks3.1.conv2.bias',
        'stages.1.blocks.0.norm1.running_var': 'blocks2.0.norm1.running_var',
        'stages.3.blocks.1.qkv.weight': 'blocks4.1.conv1.weight',
        'stages.3.blocks.1.local.weight': 'blocks4.1.conv.weight',
        'stages.3.blocks.0.proj_out.weight': 'blocks4.0.conv2.weight',
        'stages.3.blocks.0.mix_weight': 'blocks4.0.sa_weight',
        'stages.3.blocks.0.mlp.fc2.weight': 'blocks4.0.mlp.fc2.weight',
        'norm3.running_mean': 'norm.running_mean',
    }
    for ours, theirs in pairs.items():
        assert torch.equal(converted[ours], ckpt[theirs]), ours
    assert not any(k.startswith('head.') for k in converted)
    # a key that no rule covers is an error, not silently dropped
    with pytest.raises(KeyError, match='foo.bar'):
        convert_container(dict(ckpt, **{'foo.bar': torch.zeros(1)}))
    with pytest.raises(KeyError, match='blocks2.0.sa_weight'):
        convert_container(
            dict(ckpt, **{'blocks2.0.sa_weight': torch.zeros(1)}))
    with pytest.raises(KeyError, match='patch_embed5.proj.weight'):
        convert_container(
            dict(ckpt, **{'patch_embed5.proj.weight': torch.zeros(1)}))


@pytest.mark.slow  # converter CLI in subprocess
def test_converter_cli(golden, tmp_path):
    src = tmp_path / 'container_light.pth'
    torch.save(golden['checkpoint'], src)
    dst = tmp_path / 'out' / 'container_mmvitmix.pth'
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    proc = subprocess.run([
        sys.executable,
        str(REPO / 'tools' / 'model_converters' / 'container2mmvitmix.py'),
        str(src), str(dst)
    ], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = torch.load(dst, map_location='cpu')
    assert out['meta']['dropped_keys'] == ['head.bias', 'head.weight']
    expected = convert_container(golden['checkpoint'])
    assert out['state_dict'].keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(out['state_dict'][key], value), key


# ---------------------------------------------------------- construction
def test_arch_names_and_defaults():
    """(Registries, output channels and strides: every backbone,
    test_contract.py.)"""
    model = tiny()
    assert ContainerLight(arch='LIGHT').arch == ContainerLight.arch_settings[
        'light']
    # optional arch keys take the official defaults
    assert model.arch['patch_size'] == [4, 2, 2, 2]
    assert model.arch['qkv_bias'] is True


def test_bad_arch_and_padding_arguments():
    """Container-Light's own checks (inputs, unknown arguments,
    out_indices: every backbone, test_contract.py; common arguments:
    test_reliability.py)."""
    with pytest.raises(ValueError, match=r"unknown arch 'tiny'.*'light'"):
        ContainerLight(arch='tiny')
    bad = dict(TINY)
    del bad['mlp_ratio']
    with pytest.raises(ValueError, match=r"missing keys \['mlp_ratio'\]"):
        ContainerLight(arch=bad)
    with pytest.raises(ValueError, match=r"unknown keys \['img_size'\]"):
        ContainerLight(arch=dict(TINY, img_size=[224, 56, 28, 14]))
    with pytest.raises(ValueError, match="'depth'.*4 entries"):
        ContainerLight(arch=dict(TINY, depth=[1, 1, 1]))
    with pytest.raises(ValueError, match="'patch_size'.*positive ints"):
        ContainerLight(arch=dict(TINY, patch_size=[4, 2, 0, 2]))
    with pytest.raises(ValueError, match='multiple of num_heads 5'):
        ContainerLight(arch=dict(TINY, num_heads=5))
    with pytest.raises(ValueError, match='num_heads.*positive int'):
        ContainerLight(arch=dict(TINY, num_heads=[4, 4, 4, 4]))
    with pytest.raises(ValueError, match='qkv_bias.*bool'):
        ContainerLight(arch=dict(TINY, qkv_bias='yes'))
    with pytest.raises(TypeError, match='arch must be a str or a dict'):
        ContainerLight(arch=3)
    with pytest.raises(ValueError, match=r"patch_padding.*\['corner', None\]"):
        tiny(patch_padding='same')
    # the smallest size follows custom patch sizes (total stride)
    small = ContainerLight(arch=dict(TINY, patch_size=[2, 2, 2, 2]))
    with pytest.raises(ValueError, match='at least 16'):
        small(torch.randn(1, 3, 15, 20))
    assert small(torch.randn(1, 3, 16, 20))[3].shape[-2:] == (1, 2)


@pytest.mark.parametrize('size', [(97, 161), (32, 32), (33, 45), (800, 36)])
def test_odd_input_sizes(size):
    h, w = size
    x = torch.randn(1, 3, h, w)
    corner = tiny()
    floor = tiny(patch_padding=None)
    floor.load_state_dict(corner.state_dict())
    corner.eval()
    floor.eval()
    with torch.no_grad():
        outs_corner = corner(x)
        outs_floor = floor(x)
    ceil_shapes, floor_shapes = [], []
    for stride in (4, 8, 16, 32):
        ceil_shapes.append((-(-h // stride), -(-w // stride)))
        floor_shapes.append((h // stride, w // stride))
    assert [tuple(o.shape[-2:]) for o in outs_corner] == ceil_shapes
    assert [tuple(o.shape[-2:]) for o in outs_floor] == floor_shapes
    assert all(torch.isfinite(o).all() for o in outs_corner + outs_floor)


def test_padding_semantics():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 97, 161)
    corner = tiny()
    floor = tiny(patch_padding=None)
    floor.load_state_dict(corner.state_dict())
    randomize_bn(corner)
    randomize_bn(floor)
    corner.eval()
    floor.eval()
    with torch.no_grad():
        # floor ignores the trailing 1 row / 1 column: 96x160 divides evenly
        for a, b in zip(floor(x), floor(x[..., :96, :160])):
            torch.testing.assert_close(a, b)
        # corner: the first patch embedding sees the input zero-padded to
        # 100x164 at the bottom/right, the top-left content is unchanged
        padded = F.pad(x, (0, 3, 0, 3))
        stem = corner.stages[0].patch_embed
        torch.testing.assert_close(stem(x), stem(padded))
        assert stem(x).shape[-2:] == (25, 41)
        # a multiple of 32 is not padded: both modes agree exactly
        y = x[..., :96, :160]
        for a, b in zip(corner(y), floor(y)):
            assert torch.equal(a, b)


# --------------------------------------------------------------- loading
def test_pretrained_init_cfg(golden, tmp_path):
    ckpt = copy.deepcopy(golden['checkpoint'])
    path = tmp_path / 'container_official.pth'
    torch.save(ckpt, path)
    arch = official_arch(golden['config'])
    model = ContainerLight(
        arch=arch,
        drop_path_rate=0.,
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    converted = convert_container(ckpt)
    state = model.state_dict()
    for key, value in converted.items():
        assert torch.equal(state[key], value), key

    # a whole detector checkpoint: prefix selects the backbone
    detector = {'state_dict': {'backbone.' + k: v
                               for k, v in converted.items()}}
    detector['state_dict']['neck.lateral.weight'] = torch.zeros(1)
    model = ContainerLight(arch=arch, drop_path_rate=0.)
    result = model.load_pretrained(detector, prefix='backbone')
    assert result['missing'] == [] and result['unexpected'] == []

    # a damaged file: the loader reports what is missing and unexpected
    sd = ckpt['model']
    del sd['blocks4.1.sa_weight']
    sd['blocks2.0.mlp.fc1.extra'] = torch.zeros(3)
    model = ContainerLight(arch=arch, drop_path_rate=0.)
    result = model.load_pretrained(ckpt)
    assert result['missing'] == ['stages.3.blocks.1.mix_weight']
    assert result['unexpected'] == ['stages.1.blocks.0.mlp.fc1.extra']
