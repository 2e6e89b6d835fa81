"""Tests of the ResT v2 backbone and its official-checkpoint converter.

Parity with the official code (stage outputs, output norms, every backend)
is in ``test_parity_fixtures.py``; the shared contract in
``test_contract.py``.
"""
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmvitmix.models.backbones import ResTV2, convert_restv2
from mmvitmix.models.backbones import restv2 as restv2_module
from mmvitmix.models.backbones.restv2 import is_restv2_state
from mmvitmix.models.utils import convert_restv2 as convert_restv2_reexport
from mmvitmix.registry import MODELS

TINY = dict(
    embed_dims=[16, 32, 48, 64],
    num_heads=[1, 2, 3, 4],
    depths=[1, 1, 2, 1],
    sr_ratios=[8, 4, 2, 1])

#: parameter counts of the official ImageNet models (models/rest_v2.py,
#: 1000 classes: restv2_tiny(), ... counted with sum(p.numel())), head
#: included; the published table rounds them (30.4 / 41.2 / 56.0 / 86.5 M)
OFFICIAL_PARAMS = {
    'tiny': 30434776,
    'small': 41205976,
    'base': 55965208,
    'large': 86532520,
}


def tiny(**kwargs):
    kwargs.setdefault('drop_path_rate', 0.)
    return ResTV2(arch=copy.deepcopy(TINY), **kwargs)


def official_shapes(embed_dims, num_heads, depths, sr_ratios,
                    num_classes=1000) -> dict:
    """``{key: shape}`` of an official ImageNet ResT v2 state dict, written
    from the official constructor (models/rest_v2.py): ConvStem
    ``proj.{0,1,3,4,6}``, ``pos.pa_conv``, ``norm``; ``patch_{2,3,4}``;
    blocks with ``attn.{q,kv,sr,sr_norm,up.0,up_norm,proj}`` and ``mlp``;
    final ``norm``; ``head``."""
    shapes = {}

    def norm(key, c, bn=False):
        shapes[f'{key}.weight'] = (c, )
        shapes[f'{key}.bias'] = (c, )
        if bn:
            shapes[f'{key}.running_mean'] = (c, )
            shapes[f'{key}.running_var'] = (c, )
            shapes[f'{key}.num_batches_tracked'] = ()

    def linear(key, cin, cout):
        shapes[f'{key}.weight'] = (cout, cin)
        shapes[f'{key}.bias'] = (cout, )

    c0 = embed_dims[0]
    shapes['stem.proj.0.weight'] = (c0 // 2, 3, 3, 3)
    norm('stem.proj.1', c0 // 2, bn=True)
    shapes['stem.proj.3.weight'] = (c0, c0 // 2, 3, 3)
    norm('stem.proj.4', c0, bn=True)
    shapes['stem.proj.6.weight'] = (c0, c0, 1, 1)
    shapes['stem.proj.6.bias'] = (c0, )
    shapes['stem.pos.pa_conv.weight'] = (c0, 1, 3, 3)
    shapes['stem.pos.pa_conv.bias'] = (c0, )
    norm('stem.norm', c0)
    for k in (2, 3, 4):
        cin, c = embed_dims[k - 2], embed_dims[k - 1]
        shapes[f'patch_{k}.proj.weight'] = (c, cin, 3, 3)
        shapes[f'patch_{k}.proj.bias'] = (c, )
        shapes[f'patch_{k}.pos.pa_conv.weight'] = (c, 1, 3, 3)
        shapes[f'patch_{k}.pos.pa_conv.bias'] = (c, )
        norm(f'patch_{k}.norm', c)
    for i in range(4):
        c, sr = embed_dims[i], sr_ratios[i]
        for j in range(depths[i]):
            key = f'stage{i + 1}.{j}'
            norm(f'{key}.norm1', c)
            linear(f'{key}.attn.q', c, c)
            linear(f'{key}.attn.kv', c, 2 * c)
            if sr > 1:
                shapes[f'{key}.attn.sr.weight'] = (c, 1, sr + 1, sr + 1)
                shapes[f'{key}.attn.sr.bias'] = (c, )
                norm(f'{key}.attn.sr_norm', c)
            shapes[f'{key}.attn.up.0.weight'] = (sr * sr * c, 1, 3, 3)
            shapes[f'{key}.attn.up.0.bias'] = (sr * sr * c, )
            norm(f'{key}.attn.up_norm', c)
            linear(f'{key}.attn.proj', c, c)
            norm(f'{key}.norm2', c)
            linear(f'{key}.mlp.fc1', c, 4 * c)
            linear(f'{key}.mlp.fc2', 4 * c, c)
    norm('norm', embed_dims[3])
    linear('head', embed_dims[3], num_classes)
    return shapes


def num_params(shapes: dict) -> int:
    """Parameters (not BatchNorm statistics) of a shape table."""
    total = 0
    for key, shape in shapes.items():
        if key.endswith(('running_mean', 'running_var',
                         'num_batches_tracked')):
            continue
        total += int(torch.Size(shape).numel())
    return total


def zeros(shapes: dict, device='cpu') -> dict:
    return {k: torch.zeros(s, device=device) for k, s in shapes.items()}


def random_state(shapes: dict, seed: int = 0) -> dict:
    """Random float tensors (BatchNorm step counters: int64 zeros)."""
    gen = torch.Generator().manual_seed(seed)
    return {
        k: (torch.zeros(s, dtype=torch.long)
            if k.endswith('num_batches_tracked') else torch.randn(
                s, generator=gen))
        for k, s in shapes.items()
    }


# ------------------------------------------------------ official variants
@pytest.mark.parametrize('arch', sorted(OFFICIAL_PARAMS))
def test_official_keys_and_params(arch):
    settings = ResTV2.arch_settings[arch]
    shapes = official_shapes(**settings)
    # the table reproduces the official models' parameter counts
    assert num_params(shapes) == OFFICIAL_PARAMS[arch]
    head = settings['embed_dims'][3] * 1000 + 1000
    with torch.device('meta'):
        model = ResTV2(arch=arch, out_indices=3)
        full = ResTV2(arch=arch)
    # the backbone with the final norm (norm3) is the model minus its head
    assert sum(p.numel() for p in model.parameters()) == (
        OFFICIAL_PARAMS[arch] - head)
    # each further output norm adds one LayerNorm
    dims = settings['embed_dims']
    assert sum(p.numel() for p in full.parameters()) == (
        OFFICIAL_PARAMS[arch] - head + 2 * sum(dims[:3]))
    # every official key converts onto a key of ours with its shape
    converted = convert_restv2({'model': zeros(shapes, 'meta')})
    target = model.state_dict()
    assert sorted(converted) == sorted(target)
    for key, value in converted.items():
        assert tuple(value.shape) == tuple(target[key].shape), key


def test_arch_names_and_dict():
    assert ResTV2.arch_settings['large']['num_heads'] == [2, 4, 8, 16]
    assert ResTV2(arch='TINY').arch == ResTV2.arch_settings['tiny']
    # the official defaults fill num_heads and sr_ratios
    model = ResTV2(arch=dict(embed_dims=[16, 32, 48, 64], depths=[1, 1, 1, 1]))
    assert model.arch['num_heads'] == [1, 2, 4, 8]
    assert model.arch['sr_ratios'] == [8, 4, 2, 1]
    assert isinstance(
        MODELS.build(dict(type='mmvitmix.ResTV2', arch=copy.deepcopy(TINY))),
        ResTV2)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"unknown arch 'lite'.*'tiny'"):
        ResTV2(arch='lite')
    with pytest.raises(ValueError, match=r"missing keys \['depths'\]"):
        ResTV2(arch=dict(embed_dims=[16, 32, 48, 64]))
    with pytest.raises(ValueError, match='unknown keys.*mlp_ratios'):
        ResTV2(arch=dict(TINY, mlp_ratios=[4, 4, 4, 4]))
    with pytest.raises(ValueError, match='depths'):
        ResTV2(arch=dict(TINY, depths=[1, 1, 1]))
    with pytest.raises(ValueError, match='heads'):
        ResTV2(arch=dict(TINY, num_heads=[1, 3, 3, 4]))
    with pytest.raises(ValueError, match='sr_ratios'):
        ResTV2(arch=dict(TINY, sr_ratios=[8, 4, 0, 1]))
    with pytest.raises(ValueError, match="attn_backend.*'sdpa'"):
        tiny(attn_backend='fast')


# --------------------------------------------------------------- forward
@pytest.mark.parametrize('size', [(32, 32), (65, 97), (33, 47), (96, 160)])
def test_sizes(size):
    model = tiny().eval()
    h, w = size
    with torch.no_grad():
        outs = model(torch.randn(1, 3, h, w))
    shapes = []
    h, w = (h + 1) // 2, (w + 1) // 2  # stem conv1 (stride 2)
    for _ in range(4):
        h, w = (h + 1) // 2, (w + 1) // 2
        shapes.append((h, w))
    assert [tuple(o.shape[-2:]) for o in outs] == shapes
    assert all(torch.isfinite(o).all() for o in outs)


def test_upsampling_branch_crops_to_the_query_grid():
    """Off multiples of ``sr`` the pixel shuffle covers more rows and columns
    than the queries; the top-left ones are kept, so each query still gets
    the upsampled value of the reduced token that covers it."""
    torch.manual_seed(0)
    attn = restv2_module.ResTV2Attention(8, 2, sr_ratio=4).eval()
    x = torch.randn(1, 9 * 7, 8)
    calls = []
    original = restv2_module.pixel_shuffle

    def spy(t, factor):
        out = original(t, factor)
        calls.append(tuple(out.shape[-2:]))
        return out

    restv2_module.pixel_shuffle = spy
    try:
        with torch.no_grad():
            out = attn(x, (9, 7))
    finally:
        restv2_module.pixel_shuffle = original
    assert calls == [(12, 8)]  # ceil(9 / 4) * 4, ceil(7 / 4) * 4
    assert out.shape == (1, 63, 8)
    # pixel_shuffle is torch's, with a batch-0 backward
    t = torch.randn(2, 3 * 16, 3, 5)
    assert torch.equal(original(t, 4), torch.nn.functional.pixel_shuffle(t, 4))


def test_attention_goes_through_the_seam(monkeypatch):
    calls = []
    original = restv2_module.emsa_attention

    def spy(q, k, v, scale, weight, bias, eps=1e-5, backend=None):
        calls.append((weight, bias, backend, q.shape[1], k.shape[2]))
        return original(q, k, v, scale, weight, bias, eps, backend=backend)

    monkeypatch.setattr(restv2_module, 'emsa_attention', spy)
    model = tiny(attn_backend='reference').eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    # one call per block, never with head mixing; keys on the reduced grid
    assert [c[3:] for c in calls] == [(1, 4), (2, 4), (3, 4), (3, 4), (4, 4)]
    assert all(c[0] is None and c[1] is None for c in calls)
    assert all(c[2] == 'reference' for c in calls)


def test_backends_agree():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 96)
    ref = tiny(attn_backend='reference').eval()
    sdpa = tiny(attn_backend='sdpa').eval()
    sdpa.load_state_dict(ref.state_dict())
    with torch.no_grad():
        for a, b in zip(ref(x), sdpa(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_frozen_stages_cover_patch_embeddings_and_norms():
    model = tiny(frozen_stages=2).train()
    for module in (model.stem, model.stages[0], model.stages[1],
                   model.norm0, model.norm1):
        assert not any(p.requires_grad for p in module.parameters())
        assert not any(m.training for m in module.modules())
    assert not model.stages[1].patch_embed.norm.training
    for module in (model.stages[2], model.stages[3], model.norm2,
                   model.norm3):
        assert all(p.requires_grad for p in module.parameters())
    before = model.stem.norm1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(model.stem.norm1.running_mean, before)


def test_output_norms_are_side_branches():
    torch.manual_seed(0)
    plain = tiny(out_norm_cfg=None).eval()
    normed = tiny().eval()
    state = plain.state_dict()
    normed.load_state_dict(state, strict=False)
    for i in range(4):
        torch.nn.init.normal_(getattr(normed, f'norm{i}').weight)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        raw, outs = plain(x), normed(x)
    for i in range(4):
        norm = getattr(normed, f'norm{i}')
        assert norm.eps == 1e-6
        expected = norm(raw[i].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(outs[i], expected)


# ------------------------------------------------------------ conversion
def test_converter_layouts():
    shapes = official_shapes(**TINY, num_classes=10)
    ckpt = random_state(shapes)
    out = convert_restv2({'model': ckpt})
    assert convert_restv2_reexport is convert_restv2
    assert torch.equal(out['stem.conv1.weight'], ckpt['stem.proj.0.weight'])
    assert torch.equal(out['stem.norm2.running_var'],
                       ckpt['stem.proj.4.running_var'])
    assert torch.equal(out['stem.conv3.bias'], ckpt['stem.proj.6.bias'])
    assert torch.equal(out['stem.pa.conv.weight'],
                       ckpt['stem.pos.pa_conv.weight'])
    assert torch.equal(out['stem.norm.weight'], ckpt['stem.norm.weight'])
    assert torch.equal(out['stages.2.patch_embed.conv.weight'],
                       ckpt['patch_3.proj.weight'])
    assert torch.equal(out['stages.1.patch_embed.pa.conv.bias'],
                       ckpt['patch_2.pos.pa_conv.bias'])
    assert torch.equal(out['stages.3.patch_embed.norm.bias'],
                       ckpt['patch_4.norm.bias'])
    assert torch.equal(out['stages.2.blocks.1.ffn.fc2.weight'],
                       ckpt['stage3.1.mlp.fc2.weight'])
    assert torch.equal(out['stages.0.blocks.0.attn.up_conv.weight'],
                       ckpt['stage1.0.attn.up.0.weight'])
    assert torch.equal(out['stages.0.blocks.0.attn.sr_norm.bias'],
                       ckpt['stage1.0.attn.sr_norm.bias'])
    assert torch.equal(out['norm3.weight'], ckpt['norm.weight'])
    assert not any(k.startswith('head') for k in out)
    # idempotent on our layout, also under a backbone prefix
    assert convert_restv2(out) == out
    assert convert_restv2({'backbone.' + k: v for k, v in out.items()}) == out
    # DataParallel prefix
    assert convert_restv2({'module.' + k: v
                           for k, v in ckpt.items()}).keys() == out.keys()
    # a key that no rule covers is an error, not silently dropped
    with pytest.raises(KeyError, match='stage2.0.attn.extra'):
        convert_restv2(dict(ckpt, **{'stage2.0.attn.extra.w': torch.zeros(1)}))
    with pytest.raises(KeyError, match='stem.proj.2'):
        convert_restv2(dict(ckpt, **{'stem.proj.2.weight': torch.zeros(1)}))


def test_v1_and_v2_files_are_told_apart():
    v2 = official_shapes(**TINY, num_classes=10)
    assert is_restv2_state(zeros(v2, 'meta'))
    assert is_restv2_state({'backbone.bottom_up.' + k: v
                            for k, v in zeros(v2, 'meta').items()})
    assert is_restv2_state(tiny().state_dict())
    v1 = {
        'stem.conv1.weight': torch.zeros(1),
        'patch_embed_2.conv.weight': torch.zeros(1),
        'stage1.0.attn.q.weight': torch.zeros(1),
    }
    assert not is_restv2_state(v1)
    from mmvitmix.models.backbones import ResT
    assert not is_restv2_state(ResT(arch='lite').state_dict())


def test_pretrained_init_cfg(tmp_path):
    shapes = official_shapes(**TINY, num_classes=10)
    ckpt = random_state(shapes)
    path = tmp_path / 'restv2_official.pth'
    torch.save({'model': ckpt}, path)
    model = tiny(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    state = model.state_dict()
    for key, value in convert_restv2({'model': ckpt}).items():
        assert torch.equal(state[key], value), key
    # the output norms of stages 0-2 are not in an ImageNet file
    report = tiny().load_pretrained({'model': ckpt})
    assert report['missing'] == [] and report['unexpected'] == []
    assert sorted(report['fresh']) == [
        f'norm{i}.{p}' for i in range(3) for p in ('bias', 'weight')
    ]
    # a damaged file: reported, not hidden
    del ckpt['stage2.0.attn.q.weight']
    report = tiny().load_pretrained({'model': ckpt})
    assert report['missing'] == ['stages.1.blocks.0.attn.q.weight']


@pytest.mark.slow  # converter CLI in a subprocess
def test_converter_cli_detects_v2(tmp_path):
    """rest2mmvitmix.py converts a v2 file with the v2 rules (v1 files:
    test_rest.py's CLI test)."""
    repo = Path(__file__).resolve().parents[3]
    shapes = official_shapes(**TINY, num_classes=10)
    src = tmp_path / 'restv2_official.pth'
    torch.save({'model': zeros(shapes)}, src)
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(repo)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    dst = tmp_path / 'out' / 'restv2_mmvitmix.pth'
    proc = subprocess.run([
        sys.executable,
        str(repo / 'tools' / 'model_converters' / 'rest2mmvitmix.py'),
        str(src), str(dst)
    ], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert 'ResT v2' in proc.stdout
    out = torch.load(dst, map_location='cpu')
    assert out['meta']['dropped_keys'] == ['head.bias', 'head.weight']
    assert out['state_dict'].keys() == tiny(out_indices=3).state_dict().keys()
