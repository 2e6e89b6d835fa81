"""Test (evaluate) a checkpoint of a detector, segmentor or classifier.

The same dispatch as ``tools/train.py``: the config's ``default_scope`` (or
its ``_base_`` prefix) selects MMDetection, MMSegmentation or MMPretrain.
Examples::

    python tools/test.py CONFIG CHECKPOINT
    python tools/test.py CONFIG CHECKPOINT --out results.pkl       # mmdet
    python tools/test.py CONFIG CHECKPOINT --out pred_dir          # mmseg
    python tools/test.py CONFIG CHECKPOINT --show-dir vis
    python tools/test.py CONFIG PARTIAL.pth --min-coverage 0.5   # on purpose
    bash tools/dist_test.sh CONFIG CHECKPOINT 8

The checkpoint is checked against the model before the test runs: it must
provide at least ``--min-coverage`` (default 0.9) of the model's parameters
with matching shapes (docs/reliability.md); a file of another model, an
unreadable file or a partial one is refused in one line, exit status 1.
"""
import argparse

from mmengine.config import DictAction

from mmvitmix.apis import (LAUNCHERS, add_min_coverage_argument,
                           build_runner, check_annotation_files,
                           check_config, check_config_checkpoint,
                           check_output_dir, check_output_file, load_config,
                           prepare_cpu_distributed, set_local_rank,
                           set_work_dir)
from mmvitmix.apis.cli import ToolError, run
from mmvitmix.utils import check_min_coverage


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Test an mmdet / mmseg / mmpretrain model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='folder for the evaluation log and metrics (default: the '
        'config\'s work_dir, else work_dirs/<config name>)')
    parser.add_argument(
        '--out',
        help='save the predictions: mmdet and mmpretrain, a .pkl file; '
        'mmseg, a folder of prediction images (format_only style)')
    parser.add_argument(
        '--show', action='store_true', help='show the predictions in a window')
    parser.add_argument(
        '--show-dir',
        help='save images with predictions drawn: mmdet, a folder under '
        'work_dir/<timestamp>; mmseg and mmpretrain, this folder')
    parser.add_argument(
        '--wait-time',
        type=float,
        default=2,
        help='seconds each image is shown with --show')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, key=value (e.g. '
        'test_dataloader.batch_size=1)')
    parser.add_argument(
        '--launcher',
        choices=LAUNCHERS,
        default='none',
        help='job launcher (dist_test.sh uses pytorch)')
    add_min_coverage_argument(parser)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    set_local_rank(args.local_rank)
    return args


def trigger_visualization(cfg, args) -> None:
    """Turn on the visualization hook for --show / --show-dir."""
    hooks = cfg.get('default_hooks') or {}
    if 'visualization' not in hooks:
        raise ValueError(
            '--show / --show-dir need default_hooks.visualization in the '
            'config (the library\'s default_runtime provides it)')
    hook = hooks['visualization']
    scope = cfg.default_scope
    if scope == 'mmpretrain':
        hook['enable'] = True
        hook['show'] = args.show
        hook['wait_time'] = args.wait_time
        if args.show_dir:
            hook['out_dir'] = args.show_dir
        return
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        if scope == 'mmdet':
            hook['test_out_dir'] = args.show_dir
        else:  # mmseg: the visualizer saves the drawn images
            cfg.visualizer['save_dir'] = args.show_dir


def add_output(cfg, runner, out: str) -> None:
    """Make the test loop save predictions to ``out`` (library style)."""
    scope = cfg.default_scope
    if scope == 'mmseg':
        return  # set on the config before the runner is built
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(
            DumpDetResults(out_file_path=out))
    else:
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=out))


def check_args(args):
    """Everything the user gave, before anything is built."""
    check_config(args.config)
    check_min_coverage(args.min_coverage, '--min-coverage')
    if args.wait_time < 0:
        raise ToolError(f'--wait-time must be >= 0 seconds, got '
                        f'{args.wait_time}')
    if args.work_dir is not None:
        check_output_dir(args.work_dir, '--work-dir')
    if args.show_dir is not None:
        check_output_dir(args.show_dir, '--show-dir')


def check_out(cfg, out: str) -> None:
    """--out: a .pkl file (mmdet, mmpretrain) or a folder (mmseg)."""
    if cfg.default_scope == 'mmseg':
        check_output_dir(out, '--out (a folder of predictions for mmseg)')
    else:
        check_output_file(out, f'--out (a pickle of the predictions for '
                          f'{cfg.default_scope})', ('.pkl', '.pickle'))


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    cfg = load_config(args.config, args.cfg_options, args.launcher)
    set_work_dir(cfg, args.work_dir, args.config)
    if args.out is not None:
        check_out(cfg, args.out)
    # the one rule (docs/reliability.md), before the Runner writes anything:
    # mmengine alone would only warn about the keys it cannot use
    check_config_checkpoint(cfg, args.checkpoint, args.min_coverage)
    cfg.load_from = args.checkpoint
    check_annotation_files(cfg, ['test_dataloader'])
    if args.show or args.show_dir:
        trigger_visualization(cfg, args)
    if args.out is not None and cfg.default_scope == 'mmseg':
        evaluators = cfg.test_evaluator
        for evaluator in (evaluators if isinstance(evaluators, list) else
                          [evaluators]):
            evaluator['output_dir'] = args.out
            evaluator['keep_results'] = True
    prepare_cpu_distributed(cfg)
    runner = build_runner(cfg)
    if args.out is not None:
        add_output(cfg, runner, args.out)
    runner.test()


if __name__ == '__main__':
    run(main)
