"""RMTClsHead: the official RMT classifier, parity with the official
logits (golden fixtures), loading from an official checkpoint, and use in
an MMPretrain ImageClassifier."""
import pytest
import torch

pytest.importorskip('mmpretrain')

from mmvitmix.models import RMT, RMTClsHead  # noqa: E402
from mmvitmix.testing import assert_close_rel  # noqa: E402
from .test_backbones.conftest import load_golden  # noqa: E402


@pytest.mark.parametrize('name', ['rmt_tiny_axial.pt', 'rmt_tiny_whole_ls.pt'])
def test_official_logits(name, tmp_path):
    golden = load_golden(name)
    path = tmp_path / 'official.pth'
    torch.save(golden['checkpoint'], path)
    backbone = RMT(
        arch=golden['config'],
        out_indices=(3, ),
        out_norm_cfg=None,
        drop_path_rate=0.,
        init_cfg=dict(type='Pretrained', checkpoint=str(path))).eval()
    backbone.init_weights()
    num_classes, in_channels = golden['logits'].shape[1], \
        golden['config']['embed_dims'][-1]
    head = RMTClsHead(
        num_classes=num_classes,
        in_channels=in_channels,
        init_cfg=dict(type='Pretrained', checkpoint=str(path))).eval()
    head.init_weights()
    with torch.no_grad():
        logits = head(backbone(golden['input']))
    assert_close_rel(logits, golden['logits'], 1e-5)


def test_image_classifier_end_to_end(tmp_path):
    """Built through MMPretrain's registry as a config does: the official
    checkpoint feeds the backbone (converter) and the head; predictions
    are the official logits' softmax."""
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    golden = load_golden('rmt_tiny_axial.pt')
    path = tmp_path / 'official.pth'
    torch.save(golden['checkpoint'], path)
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(
                type='mmvitmix.RMT',
                arch=golden['config'],
                out_indices=(3, ),
                out_norm_cfg=None,
                drop_path_rate=0.,
                init_cfg=dict(type='Pretrained', checkpoint=str(path))),
            head=dict(
                type='mmvitmix.RMTClsHead',
                num_classes=10,
                in_channels=golden['config']['embed_dims'][-1],
                loss=dict(type='CrossEntropyLoss'),
                init_cfg=dict(type='Pretrained', checkpoint=str(path)))))
    model.init_weights()
    model.eval()
    with torch.no_grad():
        logits = model(golden['input'], mode='tensor')
    assert_close_rel(logits, golden['logits'], 1e-5)
    # a training step runs
    model.train()
    from mmpretrain.structures import DataSample
    samples = [DataSample().set_gt_label(i) for i in range(2)]
    losses = model(golden['input'], samples, mode='loss')
    assert torch.isfinite(losses['loss'])


def test_errors(tmp_path):
    with pytest.raises(ValueError, match='num_classes must be an int'):
        RMTClsHead(num_classes=0, in_channels=8)
    head = RMTClsHead(num_classes=3, in_channels=8)
    with pytest.raises(ValueError, match=r'expects the last stage as '
                       r'\(B, 8, H, W\)'):
        head((torch.zeros(1, 16, 2, 2), ))
    path = tmp_path / 'backbone_only.pth'
    torch.save({'model': {'patch_embed.proj.0.weight': torch.zeros(1)}}, path)
    head = RMTClsHead(
        num_classes=3,
        in_channels=8,
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match='no official RMT classifier keys'):
        head.init_weights()
