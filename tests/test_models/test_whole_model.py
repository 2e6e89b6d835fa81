"""The authors' whole ResT v2 detectors (detectron2) and segmentors (mmseg
0.x) convert into our configs' models with no missing or unexpected key.

The files are synthetic: key / shape tables written from detectron2's and
mmseg 0.x's module definitions (detectron2: FPN ``fpn_lateral{l}`` /
``fpn_output{l}`` / ``top_block.p6, p7``, StandardRPNHead ``conv`` /
``objectness_logits`` / ``anchor_deltas``, FastRCNNConvFCHead ``fc1, fc2``,
FastRCNNOutputLayers ``cls_score`` (classes + background) / ``bbox_pred``,
MaskRCNNConvUpsampleHead ``mask_fcn1-4`` / ``deconv`` / ``predictor``,
RetinaNetHead ``cls_subnet`` / ``bbox_subnet`` (conv, ReLU pairs) /
``cls_score`` / ``bbox_pred``), the backbone from the official ResT v2
detection / segmentation backbone.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmvitmix.models.backbones import ResTV2
from mmvitmix.models.backbones.restv2 import convert_restv2_whole_model
from mmvitmix.models.utils.whole_model import (check_against_model,
                                               retinanet_anchor_permutation,
                                               whole_model_layout)
from .test_backbones.test_restv2 import official_shapes, random_state

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs' / 'restv2'
NUM_CLASSES = 80


def build(config: str):
    """The model of a config, shapes only (meta device)."""
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.utils import import_modules_from_strings
    cfg = Config.fromfile(str(CONFIGS / config))
    import_modules_from_strings(**cfg.custom_imports)
    scope = cfg.default_scope
    __import__(f'{scope}.utils', fromlist=['register_all_modules'])\
        .register_all_modules(init_default_scope=False)
    init_default_scope(scope)
    cfg.model.backbone.pop('init_cfg', None)
    with torch.device('meta'):
        return MODELS.build(cfg.model)


def backbone_shapes(arch: str, norms, layout: str) -> dict:
    """The official dense backbone: the ImageNet keys without ``norm`` /
    ``head``, plus ``norm_{k}`` (detectron2: ``norm_{k}.0``)."""
    settings = ResTV2.arch_settings[arch]
    shapes = {
        k: v
        for k, v in official_shapes(**settings).items()
        if not k.startswith(('norm.', 'head.'))
    }
    for k in norms:
        c = settings['embed_dims'][k - 1]
        sub = f'norm_{k}.0' if layout == 'detectron2' else f'norm_{k}'
        shapes[f'{sub}.weight'] = (c, )
        shapes[f'{sub}.bias'] = (c, )
    return shapes


def d2_fpn(levels, in_dims, shapes, out=256):
    for level, c in zip(levels, in_dims):
        shapes[f'backbone.fpn_lateral{level}.weight'] = (out, c, 1, 1)
        shapes[f'backbone.fpn_lateral{level}.bias'] = (out, )
        shapes[f'backbone.fpn_output{level}.weight'] = (out, out, 3, 3)
        shapes[f'backbone.fpn_output{level}.bias'] = (out, )


def conv(shapes, key, cout, cin, k):
    shapes[f'{key}.weight'] = (cout, cin, k, k)
    shapes[f'{key}.bias'] = (cout, )


def d2_mask_rcnn(arch: str) -> dict:
    shapes = {
        f'backbone.bottom_up.{k}': v
        for k, v in backbone_shapes(arch, (1, 2, 3, 4), 'detectron2').items()
    }
    d2_fpn((2, 3, 4, 5), ResTV2.arch_settings[arch]['embed_dims'], shapes)
    rpn = 'proposal_generator.rpn_head'
    conv(shapes, f'{rpn}.conv', 256, 256, 3)
    conv(shapes, f'{rpn}.objectness_logits', 3, 256, 1)
    conv(shapes, f'{rpn}.anchor_deltas', 12, 256, 1)
    shapes['roi_heads.box_head.fc1.weight'] = (1024, 256 * 7 * 7)
    shapes['roi_heads.box_head.fc1.bias'] = (1024, )
    shapes['roi_heads.box_head.fc2.weight'] = (1024, 1024)
    shapes['roi_heads.box_head.fc2.bias'] = (1024, )
    shapes['roi_heads.box_predictor.cls_score.weight'] = (NUM_CLASSES + 1,
                                                          1024)
    shapes['roi_heads.box_predictor.cls_score.bias'] = (NUM_CLASSES + 1, )
    shapes['roi_heads.box_predictor.bbox_pred.weight'] = (NUM_CLASSES * 4,
                                                          1024)
    shapes['roi_heads.box_predictor.bbox_pred.bias'] = (NUM_CLASSES * 4, )
    for i in range(1, 5):
        conv(shapes, f'roi_heads.mask_head.mask_fcn{i}', 256, 256, 3)
    # ConvTranspose2d weights are (in, out, k, k)
    shapes['roi_heads.mask_head.deconv.weight'] = (256, 256, 2, 2)
    shapes['roi_heads.mask_head.deconv.bias'] = (256, )
    conv(shapes, 'roi_heads.mask_head.predictor', NUM_CLASSES, 256, 1)
    return shapes


def d2_retinanet(arch: str) -> dict:
    dims = ResTV2.arch_settings[arch]['embed_dims']
    # the detectron2 builder adds norm_{k} for every OUT_FEATURES entry:
    # all four stages by default, though the FPN reads stages 2-4
    shapes = {
        f'backbone.bottom_up.{k}': v
        for k, v in backbone_shapes(arch, (1, 2, 3, 4), 'detectron2').items()
    }
    d2_fpn((3, 4, 5), dims[1:], shapes)
    conv(shapes, 'backbone.top_block.p6', 256, dims[3], 3)
    conv(shapes, 'backbone.top_block.p7', 256, 256, 3)
    for sub in ('cls_subnet', 'bbox_subnet'):
        for i in (0, 2, 4, 6):
            conv(shapes, f'head.{sub}.{i}', 256, 256, 3)
    conv(shapes, 'head.cls_score', 9 * NUM_CLASSES, 256, 3)
    conv(shapes, 'head.bbox_pred', 9 * 4, 256, 3)
    return shapes


def mmseg0_upernet(arch: str, model) -> dict:
    """mmseg 0.x UperNet: the backbone as the official mmseg backbone names
    it; decode / auxiliary heads under the names mmseg 1.x kept."""
    shapes = {
        f'backbone.{k}': v
        for k, v in backbone_shapes(arch, (1, 2, 3, 4), 'mmseg').items()
    }
    for key, value in model.state_dict().items():
        if key.startswith(('decode_head.', 'auxiliary_head.')):
            shapes[key] = tuple(value.shape)
    return shapes


def convert_into(config: str, shapes: dict, layout: str):
    model = build(config)
    state = random_state(shapes)
    assert whole_model_layout({'model': state}) == layout
    converted = convert_restv2_whole_model({'model': state},
                                           model.backbone.out_indices)
    assert check_against_model(model, converted) == []
    return state, converted


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_detectron2_mask_rcnn(arch):
    state, out = convert_into(f'maskrcnn_restv2_{arch}_3x.py',
                              d2_mask_rcnn(arch), 'detectron2')
    assert torch.equal(out['backbone.norm2.weight'],
                       state['backbone.bottom_up.norm_3.0.weight'])
    assert torch.equal(out['neck.lateral_convs.0.conv.weight'],
                       state['backbone.fpn_lateral2.weight'])
    assert torch.equal(out['neck.fpn_convs.3.conv.bias'],
                       state['backbone.fpn_output5.bias'])
    assert torch.equal(out['rpn_head.rpn_reg.weight'],
                       state['proposal_generator.rpn_head.anchor_deltas.'
                             'weight'])
    assert torch.equal(out['roi_head.bbox_head.shared_fcs.1.weight'],
                       state['roi_heads.box_head.fc2.weight'])
    # background is the last class in both libraries: no reordering
    assert torch.equal(out['roi_head.bbox_head.fc_cls.weight'],
                       state['roi_heads.box_predictor.cls_score.weight'])
    assert torch.equal(out['roi_head.mask_head.convs.3.conv.weight'],
                       state['roi_heads.mask_head.mask_fcn4.weight'])
    assert torch.equal(out['roi_head.mask_head.upsample.weight'],
                       state['roi_heads.mask_head.deconv.weight'])
    assert torch.equal(out['roi_head.mask_head.conv_logits.bias'],
                       state['roi_heads.mask_head.predictor.bias'])


def test_detectron2_retinanet():
    state, out = convert_into('retinanet_restv2_tiny_3x.py',
                              d2_retinanet('tiny'), 'detectron2')
    # stage 0's output norm has no place (the FPN reads stages 1-3)
    assert 'backbone.norm0.weight' not in out
    assert torch.equal(out['neck.lateral_convs.0.conv.weight'],
                       state['backbone.fpn_lateral3.weight'])
    assert torch.equal(out['neck.fpn_convs.3.conv.weight'],
                       state['backbone.top_block.p6.weight'])
    assert torch.equal(out['neck.fpn_convs.4.conv.weight'],
                       state['backbone.top_block.p7.weight'])
    assert torch.equal(out['bbox_head.cls_convs.2.conv.weight'],
                       state['head.cls_subnet.4.weight'])
    assert torch.equal(out['bbox_head.reg_convs.3.conv.bias'],
                       state['head.bbox_subnet.6.bias'])
    # anchors: detectron2 size s x ratio r at s * 3 + r, mmdet at r * 3 + s
    cls_d2 = state['head.cls_score.weight'].reshape(3, 3, NUM_CLASSES, -1)
    cls_mm = out['bbox_head.retina_cls.weight'].reshape(3, 3, NUM_CLASSES, -1)
    reg_d2 = state['head.bbox_pred.bias'].reshape(3, 3, 4)
    reg_mm = out['bbox_head.retina_reg.bias'].reshape(3, 3, 4)
    for s in range(3):
        for r in range(3):
            assert torch.equal(cls_mm[r, s], cls_d2[s, r])
            assert torch.equal(reg_mm[r, s], reg_d2[s, r])


def test_retinanet_permutation_is_a_permutation():
    perm = retinanet_anchor_permutation(9 * 4, 4)
    assert sorted(perm.tolist()) == list(range(36))
    assert perm[:4].tolist() == [0, 1, 2, 3]  # (r0, s0) is d2's anchor 0
    assert perm[4:8].tolist() == [12, 13, 14, 15]  # (r0, s1): d2 anchor 3
    with pytest.raises(ValueError, match='9 anchors x 4'):
        retinanet_anchor_permutation(35, 4)


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_mmseg0_upernet(arch):
    config = f'upernet_restv2_{arch}_160k_ade20k.py'
    model = build(config)
    state, out = convert_into(config, mmseg0_upernet(arch, model), 'mmseg0')
    assert torch.equal(out['backbone.norm0.bias'],
                       state['backbone.norm_1.bias'])
    assert torch.equal(out['backbone.stages.2.blocks.0.attn.up_conv.weight'],
                       state['backbone.stage3.0.attn.up.0.weight'])
    assert out['decode_head.conv_seg.weight'] is state[
        'decode_head.conv_seg.weight']


def test_unknown_keys_are_an_error():
    shapes = d2_mask_rcnn('tiny')
    state = random_state(shapes)
    state['roi_heads.keypoint_head.score_lowres.weight'] = torch.zeros(1)
    with pytest.raises(KeyError, match='keypoint_head'):
        convert_restv2_whole_model(state)
    with pytest.raises(ValueError, match='not a whole detectron2'):
        convert_restv2_whole_model(
            random_state(official_shapes(**ResTV2.arch_settings['tiny'])))


@pytest.mark.slow  # the converter CLI in a subprocess, with --config
def test_cli_checks_against_the_config(tmp_path):
    src = tmp_path / 'mask_rcnn_restv2_tiny_d2.pth'
    torch.save({'model': random_state(d2_mask_rcnn('tiny')),
                'iteration': 270000}, src)
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    script = str(REPO / 'tools' / 'model_converters' / 'rest2mmvitmix.py')
    dst = tmp_path / 'out.pth'
    proc = subprocess.run([
        sys.executable, script, str(src), str(dst), '--config',
        str(CONFIGS / 'maskrcnn_restv2_tiny_3x.py')
    ], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert 'ResT v2' in proc.stdout and 'detectron2' in proc.stdout
    out = torch.load(dst, map_location='cpu')
    assert out['meta']['layout'] == 'detectron2'
    assert out['meta']['dropped_keys'] == []
    # the wrong config: refused, nothing written
    bad = tmp_path / 'bad.pth'
    proc = subprocess.run([
        sys.executable, script, str(src), str(bad), '--config',
        str(CONFIGS / 'maskrcnn_restv2_small_3x.py')
    ], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert 'does not fit' in proc.stderr and not bad.exists()


@pytest.mark.slow  # the converter CLI in a subprocess
def test_cli_classifier_for_the_384_fine_tuning(tmp_path):
    """``--classifier`` writes the 224 classifier (backbone and head) for
    ``load_from`` of restv2_*_in1k_384_ft.py."""
    src = tmp_path / 'restv2_tiny_224.pth'
    torch.save({'model': random_state(
        official_shapes(**ResTV2.arch_settings['tiny']))}, src)
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    dst = tmp_path / 'restv2_tiny_224_in1k_mmpretrain.pth'
    proc = subprocess.run([
        sys.executable,
        str(REPO / 'tools' / 'model_converters' / 'rest2mmvitmix.py'),
        str(src), str(dst), '--classifier'
    ], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    converted = torch.load(dst, map_location='cpu')['state_dict']
    model = build('restv2_tiny_in1k_384_ft.py')
    assert check_against_model(model, converted) == []
    cfg = Config.fromfile(str(CONFIGS / 'restv2_tiny_in1k_384_ft.py'))
    assert cfg.load_from.endswith(dst.name)
