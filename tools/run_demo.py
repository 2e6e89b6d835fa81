"""The demo: train Mask R-CNN with an RMT-T backbone from scratch on CPU.

Steps:

1. generate the bundled shapes data set (``data/demo``) if it is missing,
2. train ``configs/demo/maskrcnn_rmt_t_demo.py`` with mmengine's Runner
   (normal progress logging), validating with COCO bbox + segm metrics at
   the end,
3. print the bbox and segm mAP,
4. draw predictions next to the ground truth of a few validation images with
   mmdet's ``DetLocalVisualizer`` into ``work_dirs/demo/predictions.png``.

About 5-10 minutes on 2 CPU cores. Run from the repository root::

    python tools/run_demo.py

Options shorten the run (``--max-iters 50``) or change the config
(``--cfg-options optim_wrapper.optimizer.lr=5e-4``).
"""
import argparse
import os
import os.path as osp
import time
from pathlib import Path

# OpenMP threads that sleep instead of spinning while they wait: on a
# machine whose cores are shared with other jobs, spinning threads take the
# cores the working threads need and slow every step several-fold; on an
# idle machine the difference is small. Must be set before torch is imported.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import numpy as np  # noqa: E402
from mmvitmix.apis import cli
from mmvitmix.apis.cli import ToolError, run

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Train Mask R-CNN + RMT-T from scratch on the bundled '
        'demo shapes (CPU), report COCO mAP and draw predictions.')
    parser.add_argument(
        '--config',
        default='configs/demo/maskrcnn_rmt_t_demo.py',
        help='config file (default: %(default)s)')
    parser.add_argument(
        '--work-dir',
        default='work_dirs/demo',
        help='logs, checkpoint and predictions.png (default: %(default)s)')
    parser.add_argument(
        '--data',
        default='data/demo',
        help='demo data root, generated when missing (default: %(default)s)')
    parser.add_argument(
        '--max-iters',
        type=int,
        default=None,
        help='override the number of training iterations (quick checks)')
    parser.add_argument(
        '--num-vis',
        type=int,
        default=4,
        help='validation images drawn in predictions.png (default: 4)')
    parser.add_argument(
        '--score-thr',
        type=float,
        default=0.5,
        help='score threshold of drawn predictions (default: 0.5)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='key=value pairs merged into the config, e.g. '
        'optim_wrapper.optimizer.lr=5e-4')
    args = parser.parse_args(argv)
    if args.max_iters is not None:
        cli.count('--max-iters', args.max_iters, 2,
                  what='one warm-up iteration, then the cosine schedule')
    cli.count('--num-vis', args.num_vis)
    if not 0 <= args.score_thr <= 1:
        raise ToolError(f'--score-thr {args.score_thr}: give a score from '
                        '0 to 1')
    cli.output_dir('--work-dir', args.work_dir)
    cli.output_file('--work-dir', Path(args.work_dir) / 'predictions.png')
    cli.output_dir('--data', args.data)
    return args


def demo_data_present(root: Path) -> bool:
    """True when the COCO demo set is complete under ``root``."""
    import json
    coco = root / 'coco'
    for split in ('train', 'val'):
        ann = coco / 'annotations' / f'instances_{split}.json'
        if not ann.is_file():
            return False
        with open(ann) as f:
            images = json.load(f)['images']
        if not images or not all(
            (coco / split / im['file_name']).is_file() for im in images):
            return False
    return True


def ensure_data(root: Path) -> None:
    if demo_data_present(root):
        print(f'[demo] using the demo data in {root}')
        return
    print(f'[demo] generating the demo data in {root}')
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'make_demo_data',
        REPO_ROOT / 'tools' / 'dataset_converters' / 'make_demo_data.py')
    make_demo_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_demo_data)
    for key, value in make_demo_data.generate(root).items():
        print(f'[demo]   {key}: {value}')


def build_cfg(args):
    """The demo config with the arguments applied; refused by name when it
    is not a training config of the demo's kind."""
    cfg = cli.config_file('--config', args.config)
    if args.cfg_options:
        try:
            cfg.merge_from_dict(args.cfg_options)
        except Exception as exc:
            raise ToolError(f'--cfg-options {args.cfg_options}: '
                            f'{cli.one_line(exc)}') from exc
    try:
        return _apply_args(cfg, args)
    except (KeyError, AttributeError, TypeError) as exc:
        raise ToolError(
            f'--config {args.config!r} lacks what the demo sets '
            f'({cli.one_line(exc)}); give an iteration-based detection '
            'config with train/val/test dataloaders and evaluators, like '
            'configs/demo/maskrcnn_rmt_t_demo.py') from exc


def _apply_args(cfg, args):
    cfg.work_dir = args.work_dir
    cfg.launcher = 'none'
    data_root = osp.join(args.data, 'coco') + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = data_root + \
            'annotations/instances_val.json'
    if args.max_iters is not None:
        cfg.train_cfg.max_iters = args.max_iters
        cfg.train_cfg.val_interval = args.max_iters
        cfg.default_hooks.checkpoint.interval = args.max_iters
        warmup = min(50, max(1, args.max_iters // 4))
        cfg.param_scheduler = [
            dict(type='LinearLR', start_factor=0.01, by_epoch=False,
                 begin=0, end=warmup),
            dict(type='CosineAnnealingLR', T_max=args.max_iters - warmup,
                 eta_min=1e-5, by_epoch=False, begin=warmup,
                 end=args.max_iters)
        ]
    return cfg


def draw_predictions(runner, cfg, out_file: Path, num: int,
                     score_thr: float) -> None:
    """Ground truth (left) and predictions (right) of ``num`` val images,
    drawn by mmdet's DetLocalVisualizer at 3x size, stacked vertically."""
    import mmcv
    import torch
    from mmdet.visualization import DetLocalVisualizer
    from mmengine.dataset import Compose, pseudo_collate

    dataset = runner.val_dataloader.dataset
    model = runner.model
    model.eval()
    pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
    vis = DetLocalVisualizer(name='demo_predictions', line_width=2)
    vis.dataset_meta = dataset.metainfo
    scale = 3
    rows = []
    for index in range(min(num, len(dataset))):
        info = dataset.get_data_info(index)
        data = pipeline(
            dict(img_path=info['img_path'], img_id=info['img_id'],
                 instances=info['instances']))
        with torch.no_grad():
            sample = model.test_step(pseudo_collate([data]))[0]
        image = mmcv.imread(info['img_path'], channel_order='rgb')
        image = mmcv.imresize(
            image, (image.shape[1] * scale, image.shape[0] * scale),
            interpolation='nearest')
        for key in ('gt_instances', 'pred_instances'):
            inst = sample.get(key)
            inst.bboxes = inst.bboxes * scale
            if 'masks' in inst:
                masks = inst.masks
                if hasattr(masks, 'rescale'):  # BitmapMasks (ground truth)
                    masks = masks.to_ndarray()
                masks = torch.as_tensor(np.asarray(masks)).float()
                if masks.numel():
                    masks = torch.nn.functional.interpolate(
                        masks[None], scale_factor=scale, mode='nearest')[0]
                else:
                    masks = masks.new_zeros(
                        (0, image.shape[0], image.shape[1]))
                inst.masks = masks.bool().numpy()
        vis.add_datasample(
            f'val_{index}',
            image,
            sample,
            draw_gt=True,
            draw_pred=True,
            pred_score_thr=score_thr,
            show=False)
        rows.append(vis.get_image())
    out_file.parent.mkdir(parents=True, exist_ok=True)
    mmcv.imwrite(np.concatenate(rows, axis=0)[..., ::-1], str(out_file))


def main(argv=None) -> int:
    start = time.time()
    args = parse_args(argv)
    cfg = build_cfg(args)
    ensure_data(Path(args.data))

    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    class KeepMetrics(Hook):
        """Remembers the metrics of the last validation."""
        priority = 'LOWEST'

        def __init__(self):
            self.metrics = {}

        def after_val_epoch(self, runner, metrics=None):
            self.metrics = dict(metrics or {})

    runner = Runner.from_cfg(cfg)
    keep = KeepMetrics()
    runner.register_hook(keep)
    train_start = time.time()
    runner.train()
    train_minutes = (time.time() - train_start) / 60
    metrics = keep.metrics
    if not metrics:  # the config validates less often than it trains
        metrics = runner.val_loop.run()

    out_file = Path(args.work_dir) / 'predictions.png'
    draw_predictions(runner, cfg, out_file, args.num_vis, args.score_thr)

    def get(key):
        return metrics.get(f'coco/{key}', float('nan'))

    line = '=' * 68
    print(line)
    print('RMT-T Mask R-CNN trained from scratch on the demo shapes: '
          f'{cfg.train_cfg.max_iters} iterations')
    print(f'  time: {train_minutes:.1f} min training + validation, '
          f'{(time.time() - start) / 60:.1f} min in all')
    print(f'  bbox mAP: {get("bbox_mAP"):.3f}  '
          f'(AP50 {get("bbox_mAP_50"):.3f}, AP75 {get("bbox_mAP_75"):.3f})')
    print(f'  segm mAP: {get("segm_mAP"):.3f}  '
          f'(AP50 {get("segm_mAP_50"):.3f}, AP75 {get("segm_mAP_75"):.3f})')
    print(f'  predictions (left: ground truth, right: predicted, score >= '
          f'{args.score_thr}): {out_file}')
    print(line)
    return 0


if __name__ == '__main__':
    run(main)
