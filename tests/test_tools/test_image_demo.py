"""demo/image_demo.py end to end on CPU: detection, segmentation and
classification configs through the downstream Inferencers, a PNG written."""
from pathlib import Path

import mmcv
import pytest
import torch

from tests.utils import load_script

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / 'demo' / 'image_demo.py'
COCO_VAL = REPO / 'data' / 'demo' / 'coco' / 'val'
ADE_IMAGES = REPO / 'data' / 'demo' / 'ade' / 'images'

pytestmark = pytest.mark.slow  # full-size models built and run


def _demo():
    return load_script('demo/image_demo.py')


def _first(folder):
    files = sorted(p for p in folder.rglob('*') if p.suffix in ('.png',
                                                              '.jpg'))
    if not files:
        pytest.skip(f'no demo image under {folder}')
    return files[0]


def _check_png(path, image):
    drawn = mmcv.imread(str(path))
    assert drawn is not None and drawn.size > 0
    source = mmcv.imread(str(image))
    # the drawing is of the input image (same size, or side by side)
    assert drawn.shape[0] >= source.shape[0] * 0.9
    assert drawn.std() > 0


def test_detection_with_a_checkpoint(tmp_path, capsys):
    """A checkpoint in the layout tools/train.py writes (state_dict + meta
    with the dataset's classes) is loaded and its classes are printed."""
    from mmengine.registry import MODELS

    demo = _demo()
    image = _first(COCO_VAL)
    config = REPO / 'configs' / 'demo' / 'maskrcnn_rmt_t_demo.py'
    cfg = demo.load_config(str(config))
    torch.manual_seed(0)
    cfg.model.backbone.pop('init_cfg', None)
    model = MODELS.build(cfg.model)
    classes = ('square', 'circle', 'triangle')
    ckpt = tmp_path / 'det.pth'
    torch.save(
        {
            'state_dict': model.state_dict(),
            'meta': dict(dataset_meta=dict(classes=classes))
        }, ckpt)
    out = tmp_path / 'det.png'
    lines = demo.main([
        str(image), str(config),
        str(ckpt), '--out-file',
        str(out), '--score-thr', '0.0'
    ])
    assert 'detection(s) with score >= 0.0' in lines[0]
    detections = lines[1:]
    assert detections, 'score threshold 0 keeps every detection'
    assert all(d.split()[0] in classes for d in detections)
    _check_png(out, image)
    assert 'drawing written to' in capsys.readouterr().out


def test_segmentation_random_weights(tmp_path, capsys):
    demo = _demo()
    image = _first(ADE_IMAGES)
    out = tmp_path / 'seg.png'
    lines = demo.main([
        str(image),
        str(REPO / 'configs' / 'demo' / 'fpn_rmt_t_demo_ade.py'),
        '--out-file', str(out)
    ])
    assert lines[0].endswith('class(es) in the segmentation:')
    shares = [float(line.split()[-2]) for line in lines[1:]]
    assert shares and abs(sum(shares) - 100) < 1 or len(shares) == 10
    _check_png(out, image)
    assert 'random weights' in capsys.readouterr().out


def test_classification_random_weights(tmp_path):
    demo = _demo()
    image = _first(COCO_VAL)
    out = tmp_path / 'cls.png'
    lines = demo.main([
        str(image),
        str(REPO / 'configs' / 'riformer' / 'riformer_s12_in1k_cls.py'),
        '--out-file',
        str(out), '--topk', '3'
    ])
    assert lines[0] == 'top-3 classes:' and len(lines) == 4
    scores = [float(line.split()[-1]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)
    _check_png(out, image)


def test_bad_arguments(tmp_path):
    demo = _demo()
    image = _first(COCO_VAL)
    from mmvitmix.apis import ToolError
    with pytest.raises(ToolError, match='image .* does not exist'):
        demo.main(['missing.png', 'x.py', '--out-file', 'o.png'])
    with pytest.raises(ToolError, match='checkpoint .* does not exist'):
        demo.main([
            str(image),
            str(REPO / 'configs' / 'demo' / 'maskrcnn_rmt_t_demo.py'),
            str(tmp_path / 'none.pth'), '--out-file', 'o.png'
        ])
