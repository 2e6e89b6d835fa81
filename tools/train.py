"""Train a detector, segmentor or classifier with an mmvitmix backbone.

One entry point for MMDetection, MMSegmentation and MMPretrain configs: the
config's ``default_scope`` (or its ``_base_`` prefix, e.g. ``mmdet::``)
selects the library. Examples::

    python tools/train.py configs/.../mask-rcnn_rmt-t_fpn_1x_coco.py
    bash tools/dist_train.sh CONFIG 8 --amp
    python tools/train.py CONFIG --resume                # latest readable
    python tools/train.py CONFIG --resume PATH.pth       # in work_dir
    python tools/train.py CONFIG --cfg-options train_cfg.max_iters=100
    python tools/train.py CONFIG --cfg-options load_from=PATH.pth \
        --min-coverage 0.5                               # partial, on purpose

A checkpoint to start from (``load_from`` in the config or
``--cfg-options``, or the one ``--resume`` picks) is checked against the
model before training starts: it must provide at least ``--min-coverage``
(default 0.9) of the model's parameters with matching shapes
(docs/reliability.md). A backbone's ``init_cfg`` Pretrained file has its
own ``min_coverage`` key.
"""
import argparse
import os.path as osp

from mmengine.config import DictAction

from mmvitmix.apis import (LAUNCHERS, add_min_coverage_argument,
                           build_runner, check_annotation_files,
                           check_config, check_config_checkpoint,
                           check_output_dir, choose_resume_checkpoint,
                           enable_cpu_amp, load_config,
                           prepare_cpu_distributed, set_local_rank,
                           set_work_dir)
from mmvitmix.apis.cli import run
from mmvitmix.utils import CheckpointError, check_min_coverage


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train an mmdet / mmseg / mmpretrain model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--work-dir',
        help='folder for logs and checkpoints (default: the config\'s '
        'work_dir, else work_dirs/<config name>)')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint; without a path, from the newest '
        'readable checkpoint in the work_dir (damaged ones, e.g. truncated '
        'by a crash while saving, are named and skipped)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='automatic mixed precision (AmpOptimWrapper, dynamic loss '
        'scale; without a GPU: bfloat16 autocast on the CPU)')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the total batch size relative to '
        'the config\'s auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, key=value (e.g. '
        'train_cfg.max_iters=100 model.backbone.drop_path_rate=0.2); lists '
        'as key="[a,b]" or key=a,b, no spaces inside')
    parser.add_argument(
        '--launcher',
        choices=LAUNCHERS,
        default='none',
        help='job launcher (dist_train.sh uses pytorch, slurm_train.sh '
        'slurm)')
    add_min_coverage_argument(parser)
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    set_local_rank(args.local_rank)
    return args


def apply_train_args(cfg, args) -> None:
    """Fold --work-dir, --amp, --auto-scale-lr and --resume into ``cfg``."""
    set_work_dir(cfg, args.work_dir, args.config)

    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper == 'AmpOptimWrapper':
            print('AMP training is already enabled in the config.')
        else:
            if optim_wrapper != 'OptimWrapper':
                raise ValueError(
                    f'--amp needs optim_wrapper.type OptimWrapper or '
                    f'AmpOptimWrapper, the config has {optim_wrapper!r}')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

    if args.auto_scale_lr:
        auto = cfg.get('auto_scale_lr')
        if not auto or 'base_batch_size' not in auto:
            raise ValueError(
                '--auto-scale-lr needs auto_scale_lr = dict('
                'base_batch_size=N) in the config (N: the total batch size '
                'the learning rate was tuned for)')
        auto.enable = True

    if args.resume is not None:
        requested = None if args.resume == 'auto' else args.resume
        if requested is not None and not osp.isfile(requested):
            raise FileNotFoundError(
                f'--resume checkpoint {requested!r} does not exist')
        # every candidate is read before the run: a checkpoint truncated by
        # a crash while saving is named and skipped (auto) or refused (PATH)
        cfg.resume = True
        cfg.load_from = choose_resume_checkpoint(cfg.work_dir, requested)


def check_start_checkpoint(cfg, args) -> None:
    """The checkpoint training starts from, against the config's model (on
    the meta device, before the Runner writes anything)."""
    path = cfg.get('load_from')
    if not path:
        return
    origin = '--resume' if cfg.get('resume') else 'load_from'
    try:
        check_config_checkpoint(cfg, path, args.min_coverage)
    except CheckpointError as exc:
        raise CheckpointError(f'{origin}: {exc}') from exc


def main(argv=None):
    args = parse_args(argv)
    check_config(args.config)
    check_min_coverage(args.min_coverage, '--min-coverage')
    if args.work_dir is not None:
        check_output_dir(args.work_dir, '--work-dir')
    cfg = load_config(args.config, args.cfg_options, args.launcher)
    apply_train_args(cfg, args)
    check_start_checkpoint(cfg, args)
    loaders = ['train_dataloader']
    if cfg.get('val_cfg') is not None:
        loaders.append('val_dataloader')
    check_annotation_files(cfg, loaders)
    enable_cpu_amp(cfg)
    prepare_cpu_distributed(cfg)
    runner = build_runner(cfg)
    runner.train()


if __name__ == '__main__':
    run(main)
