"""Convert a trained model checkpoint to its re-parameterised deploy structure.

Usage::

    python tools/deploy/reparameterize.py CONFIG CHECKPOINT OUT \
        [--shape H W] [--tol 1e-5] [--cfg-options k=v ...]

Builds the model of ``CONFIG`` (a training config: MMDetection detector,
MMSegmentation segmentor or MMPretrain classifier), loads ``CHECKPOINT``
(which must provide at least ``--min-coverage``, default 0.9, of the model's
parameters with matching shapes; docs/reliability.md), then calls ``switch_to_deploy()`` on every module that has one
(e.g. :class:`mmvitmix.models.RIFormer`, which folds each block's affine
token mixer into the norm before it). On one random input it checks that
nothing changed:

* the backbone features (``model.backbone(x)``) and
* the whole model's raw outputs (``model(x, data_samples, mode='tensor')``,
  i.e. ``_forward``: head logits / box and mask predictions / seg logits;
  for a two-stage detector the neck, the RPN maps and the RoI head's outputs
  on the training model's proposals, since top-k / NMS selection is
  discontinuous and float rounding may swap a proposal),

with the relative difference ``max|new - old| / max|old|`` of every tensor
below ``--tol`` (default 1e-5); otherwise it exits with status 1 and writes
nothing. The result ``{'state_dict': ..., 'meta': ...}`` loads with the
deploy twin of the config (``configs/<arch>/deploy/*``, which sets
``model.backbone.deploy=True``), e.g. ``tools/test.py DEPLOY_CONFIG OUT``.
"""
import argparse
import copy
import os.path as osp
import sys
from typing import List, Optional

import torch
from mmengine.config import DictAction
from mmengine.registry import MODELS, init_default_scope

from mmvitmix.apis import (add_min_coverage_argument, check_config,
                           check_file, check_output_file, check_shape,
                           load_config)
from mmvitmix.apis.cli import ToolError, run
from mmvitmix.utils import DEFAULT_MIN_COVERAGE, check_min_coverage


def parse_args(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(
        description='Re-parameterise a trained checkpoint into the deploy '
        'structure and check that the outputs are unchanged.')
    parser.add_argument('config', help='training config of the model')
    parser.add_argument('checkpoint', help='trained checkpoint')
    parser.add_argument('out', help='output deploy checkpoint (.pth)')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=[256, 320],
        metavar=('H', 'W'),
        help='random input size of the equivalence check (default 256 320)')
    parser.add_argument(
        '--tol',
        type=float,
        default=1e-5,
        help='largest accepted relative difference (default 1e-5)')
    parser.add_argument('--seed', type=int, default=0, help='input seed')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, as in tools/train.py')
    add_min_coverage_argument(parser)
    return parser.parse_args(argv)


def _fake_data_samples(model, height: int, width: int):
    """Data samples carrying the meta information a predict path reads."""
    meta = dict(
        img_shape=(height, width),
        ori_shape=(height, width),
        pad_shape=(height, width),
        batch_input_shape=(height, width),
        scale_factor=(1.0, 1.0),
        padding_size=[0, 0, 0, 0],
        flip=False,
        flip_direction=None)
    try:
        from mmdet.models.detectors import BaseDetector
        from mmdet.structures import DetDataSample
        if isinstance(model, BaseDetector):
            return [DetDataSample(metainfo=meta)]
    except ImportError:
        pass
    try:
        from mmseg.models.segmentors import BaseSegmentor
        from mmseg.structures import SegDataSample
        if isinstance(model, BaseSegmentor):
            return [SegDataSample(metainfo=meta)]
    except ImportError:
        pass
    return None


def _flatten(obj, name: str = 'out') -> list:
    """(name, tensor) pairs of a nested tuple / list / dict of tensors."""
    if isinstance(obj, torch.Tensor):
        return [(name, obj)]
    if isinstance(obj, (list, tuple)):
        pairs = []
        for i, item in enumerate(obj):
            pairs += _flatten(item, f'{name}[{i}]')
        return pairs
    if isinstance(obj, dict):
        pairs = []
        for key in sorted(obj):
            pairs += _flatten(obj[key], f'{name}.{key}')
        return pairs
    if obj is None:
        return []
    raise TypeError(f'{name}: cannot compare an output of type '
                    f'{type(obj).__name__}')


def _is_two_stage(model) -> bool:
    return bool(getattr(model, 'with_rpn', False)) and hasattr(
        model, 'roi_head')


@torch.no_grad()
def _outputs(model, inputs, data_samples, proposals=None) -> tuple:
    """(name, tensor) pairs of the backbone and the whole model, and the
    RPN proposals used (two-stage detectors).

    A two-stage detector's ``_forward`` picks proposals by top-k and NMS,
    which float rounding can flip; given ``proposals`` (those of the first
    run), the RoI head runs on exactly those, so the comparison measures the
    conversion and not a swapped proposal. Its RPN's raw maps and the neck
    features are compared as well.
    """
    pairs = []
    if hasattr(model, 'backbone'):
        pairs += _flatten(model.backbone(inputs), 'backbone')
    if _is_two_stage(model):
        feats = model.extract_feat(inputs)
        if proposals is None:
            proposals = model.rpn_head.predict(
                feats, data_samples, rescale=False)
        pairs += _flatten(feats, 'neck')
        pairs += _flatten(model.rpn_head(feats), 'rpn_head')
        roi_outs = model.roi_head.forward(feats, copy.deepcopy(proposals),
                                          data_samples)
        pairs += _flatten(roi_outs, 'model.roi_head')
    else:
        pairs += _flatten(model(inputs, data_samples, mode='tensor'), 'model')
    return pairs, proposals


def compare(before: list, after: list) -> tuple:
    """Largest relative difference and the name of that tensor."""
    if [n for n, _ in before] != [n for n, _ in after]:
        raise RuntimeError('the deploy model returns a different output '
                           'structure than the training model')
    worst, worst_name = 0.0, None
    for (name, old), (_, new) in zip(before, after):
        if old.shape != new.shape:
            raise RuntimeError(f'{name}: shape {tuple(old.shape)} became '
                               f'{tuple(new.shape)}')
        if old.numel() == 0:
            continue
        old, new = old.double(), new.double()
        scale = old.abs().max().clamp_min(1e-12)
        rel = ((new - old).abs().max() / scale).item()
        if rel > worst or worst_name is None:
            worst, worst_name = rel, name
    return worst, worst_name


def reparameterize(config: str,
                   checkpoint: str,
                   out: str,
                   shape=(256, 320),
                   tol: float = 1e-5,
                   seed: int = 0,
                   cfg_options: Optional[dict] = None,
                   min_coverage: float = DEFAULT_MIN_COVERAGE) -> dict:
    """Do the conversion; return a summary. Raises ``RuntimeError`` when
    the outputs change by more than ``tol`` (nothing is written then), a
    :class:`~mmvitmix.utils.CheckpointError` when the checkpoint cannot be
    read or provides less than ``min_coverage`` of the model."""
    # scope from default_scope or the _base_ prefix, its modules registered,
    # mmvitmix.models and custom_imports imported (as tools/train.py does)
    from mmvitmix.utils import (check_output_path, load_checked,
                                read_checkpoint, save_checkpoint_atomic)
    check_output_path(out, [checkpoint, config])
    ckpt = read_checkpoint(checkpoint)  # unreadable files named first
    cfg = load_config(config, cfg_options)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    # the one rule (docs/reliability.md), then a non-strict load
    load_checked(model, ckpt, min_coverage, source=checkpoint)
    model.eval()

    targets = [
        m for m in model.modules()
        if callable(getattr(m, 'switch_to_deploy', None))
    ]
    if not targets:
        raise RuntimeError(f'no module of the model built from {config} has '
                           'a switch_to_deploy() method: nothing to convert')

    height, width = shape
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(1, 3, height, width, generator=generator)
    data_samples = _fake_data_samples(model, height, width)
    before, proposals = _outputs(model, inputs, data_samples)
    num_params_before = sum(p.numel() for p in model.parameters())

    for module in targets:
        module.switch_to_deploy()
    model.eval()
    after, _ = _outputs(model, inputs, data_samples, proposals)
    rel, name = compare(before, after)
    summary = dict(
        switched=[type(m).__name__ for m in targets],
        max_rel_diff=rel,
        worst_output=name,
        num_outputs=len(before),
        params_before=num_params_before,
        params_after=sum(p.numel() for p in model.parameters()))
    if not rel < tol:
        raise RuntimeError(
            f'outputs changed after switch_to_deploy: max relative '
            f'difference {rel:.3e} (at {name}) is not below {tol:.1e}')

    meta = dict(ckpt.get('meta', {})) if isinstance(ckpt, dict) else {}
    meta.update(
        deploy=True,
        reparameterized_from=osp.abspath(checkpoint),
        config=osp.abspath(config),
        reparameterize_max_rel_diff=rel)
    # a temporary file renamed at the end: never a half-written checkpoint
    # under the target name, never the input overwritten
    out_path = save_checkpoint_atomic(
        {'state_dict': model.state_dict(), 'meta': meta}, out,
        inputs=[checkpoint, config])
    summary['out'] = str(out_path)
    return summary


def check_args(args) -> None:
    """Everything the user gave, before a model is built (ToolError)."""
    check_config(args.config)
    check_file(args.checkpoint, 'checkpoint')
    check_output_file(args.out, 'OUT', inputs=[args.checkpoint, args.config])
    check_shape(args.shape)
    if not args.tol > 0:
        raise ToolError(f'--tol must be a number > 0, got {args.tol}')
    check_min_coverage(args.min_coverage, '--min-coverage')


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    check_args(args)
    try:
        summary = reparameterize(args.config, args.checkpoint, args.out,
                                 tuple(args.shape), args.tol, args.seed,
                                 args.cfg_options, args.min_coverage)
    except RuntimeError as exc:  # the outputs changed: the report
        print(f'error: {exc}', file=sys.stderr)
        return 1
    modules = sorted(set(summary['switched']))
    print(f'switched {len(summary["switched"])} module(s) '
          f'({", ".join(modules)}) to deploy; params '
          f'{summary["params_before"]} -> {summary["params_after"]}; '
          f'max relative difference over {summary["num_outputs"]} outputs: '
          f'{summary["max_rel_diff"]:.3e} ({summary["worst_output"]}) '
          f'-> {summary["out"]}')
    return 0


if __name__ == '__main__':
    run(main)
