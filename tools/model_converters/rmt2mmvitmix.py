"""Convert an official RMT checkpoint (qhfan/RMT) to the mmvitmix layout.

Usage::

    # ImageNet releases (RMT-T/S/B/L and the token-labeling RMT-S*/B*/L*)
    python tools/model_converters/rmt2mmvitmix.py RMT-T.pth rmt_t_mmvitmix.pth
    # the authors' trained detectors / segmentors (mmdet 2.x, mmseg 0.x)
    python tools/model_converters/rmt2mmvitmix.py maskrcnn_s_1x.pth OUT.pth \\
        --config configs/rmt/maskrcnn_rmt_s_1x.py

ImageNet files: the classifier (``proj``, ``norm``, ``head`` and the
token-labeling releases' ``aux_head``) is dropped; the per-stage output
norms ``norm{i}`` are not in those files and start at weight 1, bias 0.

Whole detector / segmentor files (``backbone.*`` plus neck and heads;
recognised automatically, or forced with ``--whole-model``): the backbone
is converted (the official ``extra_norms.{i}`` become ``norm{i}``), neck
and head keys keep their names (mmdet 3.x / mmseg 1.x kept them). With
``--config`` the output norms of stages the config's backbone does not
return are dropped (our RetinaNet configs read stages 1-3) and the result
is checked against the model that config builds: any missing or
unexpected key, or a shape mismatch, is an error and nothing is written.
"""
import argparse
import os.path as osp

import torch

from mmvitmix.models.backbones.rmt import (convert_rmt,
                                           convert_rmt_whole_model,
                                           is_whole_model)
from mmvitmix.models.converters import (check_source_family, load_source,
                                        main, unwrap_state_dict)
from mmvitmix.utils import check_output_path, save_checkpoint_atomic
from mmvitmix.apis.cli import run


def build_model(config: str):
    """The model ``config`` builds (on the meta device: shapes only)."""
    from mmengine.registry import MODELS, init_default_scope

    from mmvitmix.apis import load_config
    cfg = load_config(config)
    init_default_scope(cfg.default_scope)
    cfg.model.get('backbone', {}).pop('init_cfg', None)
    with torch.device('meta'):
        return MODELS.build(cfg.model)


def check_against(model, converted: dict, config: str) -> None:
    ours = model.state_dict()
    missing = sorted(set(ours) - set(converted))
    unexpected = sorted(set(converted) - set(ours))
    shapes = sorted(k for k in set(ours) & set(converted)
                    if tuple(ours[k].shape) != tuple(converted[k].shape))
    problems = []
    for name, keys in (('missing', missing), ('unexpected', unexpected),
                       ('with another shape', shapes)):
        if keys:
            problems.append(f'{len(keys)} keys {name} (first: '
                            f'{", ".join(keys[:5])})')
    if problems:
        raise SystemExit(f'error: the converted checkpoint does not fit '
                         f'{config}: ' + '; '.join(problems))


def convert_whole(args, state: dict) -> dict:
    check_output_path(args.dst, [args.src])
    model = build_model(args.config) if args.config else None
    out_indices = model.backbone.out_indices if model is not None else None
    converted = convert_rmt_whole_model(state, out_indices)
    if model is not None:
        check_against(model, converted, args.config)
    kept = {v.untyped_storage().data_ptr() for v in converted.values()}
    dropped = sorted(k for k, v in state.items()
                     if v.untyped_storage().data_ptr() not in kept)
    meta = dict(source=osp.abspath(args.src),
                converter='mmvitmix.models.backbones.rmt.'
                'convert_rmt_whole_model',
                config=args.config, num_source_keys=len(state),
                num_converted_keys=len(converted), dropped_keys=dropped)
    save_checkpoint_atomic({'state_dict': converted, 'meta': meta},
                           args.dst, inputs=[args.src])
    print(f'whole model: converted {len(converted)} keys, dropped '
          f'{len(dropped)} -> {args.dst}' +
          (f' (checked against {args.config})' if args.config else ''))
    if dropped:
        print('dropped: ' + ', '.join(dropped))
    return dict(converted=len(converted), dropped=dropped, dst=args.dst)


def cli(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an official RMT checkpoint to mmvitmix.')
    parser.add_argument('src', help='official checkpoint file')
    parser.add_argument('dst', help='output file (parent folders created)')
    parser.add_argument('--allow-pickle', action='store_true',
                        help='load SRC with weights_only=False (trusted '
                        'files only)')
    parser.add_argument('--whole-model', action='store_true',
                        help='SRC is a whole detector / segmentor (found '
                        'automatically when it has backbone.* and neck / '
                        'head keys)')
    parser.add_argument('--config', help='whole models: the mmvitmix '
                        'config the result must load into')
    args = parser.parse_args(argv)
    check_output_path(args.dst, [args.src])
    state = unwrap_state_dict(load_source(args.src, args.allow_pickle))
    # another family's file (official or converted) is refused by name
    check_source_family(args.src, state, ('RMT', ))
    if not args.whole_model:
        args.whole_model = is_whole_model(state)
    if args.whole_model:
        return convert_whole(args, state)
    if args.config:
        parser.error('--config applies to whole detector / segmentor files')
    rest = [args.src, args.dst] + (['--allow-pickle']
                                   if args.allow_pickle else [])
    return main(convert_rmt, parser.description, rest)


if __name__ == '__main__':
    run(cli)
