"""Run a detector, segmentor or classifier with an mmvitmix backbone on one
image, through the downstream library's own Inferencer, and draw the result.

::

    # the Mask R-CNN RMT-T that `make demo` trains, on a bundled image
    python demo/image_demo.py data/demo/coco/val/shapes_val_00000.png \\
        configs/demo/maskrcnn_rmt_t_demo.py work_dirs/demo/iter_360.pth \\
        --out-file work_dirs/demo/image_demo.png

    python demo/image_demo.py IMAGE configs/rmt/upernet_rmt_s_160k_ade20k.py \\
        CHECKPOINT --out-file seg.png

The config's library (its ``default_scope`` or ``_base_`` prefix) picks the
Inferencer: MMDetection's ``DetInferencer``, MMSegmentation's
``MMSegInferencer`` or MMPretrain's ``ImageClassificationInferencer``.
Without a checkpoint the model runs with random weights (a smoke test; the
tool says so). It prints what it found (detections above ``--score-thr``
with class and score, the classes covering the segmentation, the top-5
classes) and writes the drawing to ``--out-file``.

A checkpoint is checked against the model before the Inferencer loads it:
it must provide at least ``--min-coverage`` (default 0.9) of the model's
parameters with matching shapes (docs/reliability.md); another model's
file, an unreadable one or a partial one is refused in one line.
"""
import argparse
import os
import os.path as osp
from typing import List, Optional

import mmcv
import numpy as np

from mmvitmix.apis import (add_min_coverage_argument, check_config,
                           check_config_checkpoint, check_file,
                           check_output_file, load_config)
from mmvitmix.apis.cli import ToolError, run
from mmvitmix.utils import check_min_coverage

#: what --out-file may be: the drawing is written with mmcv.imwrite
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Detect, segment or classify one image with an mmvitmix '
        'config and draw the result.')
    parser.add_argument('image', help='image file')
    parser.add_argument('config', help='mmdet / mmseg / mmpretrain config')
    parser.add_argument(
        'checkpoint', nargs='?', help='checkpoint (omitted: random weights)')
    parser.add_argument(
        '--out-file', required=True, help='where to write the drawing (PNG)')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument(
        '--score-thr',
        type=float,
        default=0.3,
        help='detections: smallest score printed and drawn (default: 0.3)')
    parser.add_argument(
        '--topk', type=int, default=5, help='classification: classes shown')
    add_min_coverage_argument(parser)
    return parser.parse_args(argv)


def _to_bgr(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[..., ::-1])


def _detect(cfg, args) -> List[str]:
    from mmdet.apis import DetInferencer
    inferencer = DetInferencer(
        model=cfg,
        weights=args.checkpoint,
        device=args.device,
        show_progress=False)
    result = inferencer(
        args.image,
        pred_score_thr=args.score_thr,
        return_vis=True,
        no_save_vis=True)
    classes = inferencer.model.dataset_meta.get('classes', ())
    pred = result['predictions'][0]
    lines = []
    for label, score, box in zip(pred['labels'], pred['scores'],
                                 pred['bboxes']):
        if score < args.score_thr:
            continue
        name = classes[label] if label < len(classes) else str(label)
        lines.append(f'{name:>12s} {score:.3f}  box ' +
                     ' '.join(f'{v:.0f}' for v in box))
    lines.insert(0, f'{len(lines)} detection(s) with score >= '
                 f'{args.score_thr} (of {len(pred["scores"])})')
    mmcv.imwrite(_to_bgr(result['visualization'][0]), args.out_file)
    return lines


def _segment(cfg, args) -> List[str]:
    from mmseg.apis import MMSegInferencer
    inferencer = MMSegInferencer(
        model=cfg, weights=args.checkpoint, device=args.device)
    result = inferencer(args.image, return_vis=True, show=False)
    classes = inferencer.model.dataset_meta.get('classes', ())
    labels = np.asarray(result['predictions'])
    values, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts)
    lines = [f'{len(values)} class(es) in the segmentation:']
    for i in order[:10]:
        label = int(values[i])
        name = classes[label] if label < len(classes) else str(label)
        lines.append(f'{name:>16s} {100 * counts[i] / labels.size:5.1f} %')
    mmcv.imwrite(_to_bgr(result['visualization'][0]), args.out_file)
    return lines


def _classify(cfg, args) -> List[str]:
    import shutil
    import tempfile

    from mmpretrain.apis import ImageClassificationInferencer
    inferencer = ImageClassificationInferencer(
        model=cfg, pretrained=args.checkpoint or False, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        # mmpretrain's Inferencer draws into show_dir as <image stem>.png
        pred = inferencer(args.image, show_dir=tmp)[0]
        drawn = sorted(osp.join(tmp, f) for f in os.listdir(tmp))
        if not drawn:
            raise RuntimeError('the classification Inferencer drew nothing')
        os.makedirs(osp.dirname(osp.abspath(args.out_file)), exist_ok=True)
        shutil.move(drawn[0], args.out_file)
    scores = np.asarray(pred['pred_scores'])
    classes = inferencer.classes or [str(i) for i in range(len(scores))]
    top = np.argsort(-scores)[:args.topk]
    lines = [f'top-{len(top)} classes:']
    lines += [f'{classes[i]:>16s} {scores[i]:.3f}' for i in top]
    return lines


def main(argv: Optional[List[str]] = None) -> List[str]:
    args = parse_args(argv)
    check_file(args.image, 'image')
    check_config(args.config)
    check_output_file(args.out_file, '--out-file', IMAGE_SUFFIXES,
                      inputs=[args.image])
    check_min_coverage(args.min_coverage, '--min-coverage')
    if not 0 <= args.score_thr <= 1:
        raise ToolError(f'--score-thr must be a number in [0, 1], got '
                        f'{args.score_thr}')
    if args.topk < 1:
        raise ToolError(f'--topk must be an int >= 1, got {args.topk}')
    if mmcv.imread(args.image) is None:
        raise ToolError(f'image {args.image!r} cannot be decoded; give a '
                        'PNG, JPEG or another format OpenCV reads')
    # scope, its modules and mmvitmix.models registered, as tools/train.py
    cfg = load_config(args.config)
    if args.checkpoint is not None:
        # the one rule (docs/reliability.md): the Inferencers would only
        # warn about keys they cannot use
        check_config_checkpoint(cfg, args.checkpoint, args.min_coverage)
    # checkpoints written by mmengine's Runner pickle its message hub
    from mmvitmix.utils import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()
    # the Inferencers read the model's init_cfg: no Pretrained download
    # of an ImageNet backbone when a whole-model checkpoint follows
    backbone = cfg.model.get('backbone', {})
    if isinstance(backbone, dict):
        backbone.pop('init_cfg', None)
    task = {
        'mmdet': _detect,
        'mmseg': _segment,
        'mmpretrain': _classify
    }.get(cfg.default_scope)
    if task is None:
        raise ValueError(f'{args.config}: default scope '
                         f'{cfg.default_scope!r} is not mmdet, mmseg or '
                         'mmpretrain')
    if args.checkpoint is None:
        print('no checkpoint given: random weights (the output only shows '
              'that the pipeline runs)')
    # the Inferencers build their pipelines in the current default scope
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        lines = task(cfg, args)
    print('\n'.join(lines))
    print(f'drawing written to {args.out_file}')
    return lines


if __name__ == '__main__':
    run(main)
