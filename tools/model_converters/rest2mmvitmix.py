"""Convert an official ResT v1 or v2 checkpoint (wofmanaf/ResT) to the
mmvitmix layout; the version is detected from the keys.

Usage::

    # ImageNet releases (ResT v1 lite/small/base/large, v2 tiny...large)
    python tools/model_converters/rest2mmvitmix.py \\
        rest_small.pth checkpoints/rest/rest_small_mmvitmix.pth
    python tools/model_converters/rest2mmvitmix.py \\
        restv2_tiny_224.pth checkpoints/restv2/restv2_tiny_224_mmvitmix.pth
    # the authors' trained ResT v2 detectors (detectron2) and segmentors
    # (mmseg 0.x), checked against the config they must load into
    python tools/model_converters/rest2mmvitmix.py mask_rcnn_tiny.pth OUT \\
        --config configs/restv2/maskrcnn_restv2_tiny_3x.py

ImageNet files: the classifier ``head`` is dropped; the final LayerNorm
``norm`` becomes the stage-4 output norm ``norm3``; the output norms of
stages 0-2 are not in those files and start at weight 1, bias 0. A
detectron2 backbone file written by the official ``convert_to_d2.py``
(``backbone.bottom_up.`` prefix) is accepted as well.

``--classifier``: the whole ImageNet classifier in mmpretrain's
``ImageClassifier`` layout (``backbone.*`` with ``norm3``, ``head.fc.*``),
for ``load_from`` of the 384 fine-tuning configs
(``configs/restv2/restv2_*_in1k_384_ft.py``) or to evaluate the official
classifier with the ``*_in1k_cls.py`` configs.

Whole detector / segmentor files (recognised automatically, or forced with
``--whole-model``): detectron2's FPN, RPN, RoI and RetinaNet heads become
mmdet 3.x's, mmseg 0.x's heads keep their names
(:mod:`mmvitmix.models.utils.whole_model`). With ``--config`` the output
norms of stages the config's backbone does not return are dropped and the
result is checked against the model that config builds: any missing or
unexpected key, or a shape mismatch, is an error and nothing is written.
"""
import argparse
import os.path as osp

import torch

from mmvitmix.models.backbones.rest import convert_rest
from mmvitmix.models.backbones.restv2 import convert_restv2, is_restv2_state
from mmvitmix.models.converters import (check_source_family, load_source,
                                        main, unwrap_state_dict)
from mmvitmix.models.utils.whole_model import (check_against_model,
                                               convert_whole_model,
                                               whole_model_layout)
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


def convert_whole(args, state: dict, convert_fn) -> dict:
    check_output_path(args.dst, [args.src])
    model = build_model(args.config) if args.config else None
    out_indices = model.backbone.out_indices if model is not None else None
    converted = convert_whole_model(state, convert_fn, out_indices,
                                    f'{convert_fn.__name__} (whole model)')
    if model is not None:
        problems = check_against_model(model, converted)
        if problems:
            raise SystemExit(f'error: the converted checkpoint does not fit '
                             f'{args.config}: ' + '; '.join(problems))
    kept = {v.untyped_storage().data_ptr() for v in converted.values()}
    dropped = sorted(k for k, v in state.items()
                     if v.untyped_storage().data_ptr() not in kept)
    meta = dict(source=osp.abspath(args.src),
                converter='mmvitmix.models.utils.whole_model.'
                f'convert_whole_model + {convert_fn.__name__}',
                layout=whole_model_layout(state), config=args.config,
                num_source_keys=len(state),
                num_converted_keys=len(converted), dropped_keys=dropped)
    save_checkpoint_atomic({'state_dict': converted, 'meta': meta},
                           args.dst, inputs=[args.src])
    print(f'whole model ({meta["layout"]}): converted {len(converted)} '
          f'keys, dropped {len(dropped)} -> {args.dst}' +
          (f' (checked against {args.config})' if args.config else ''))
    if dropped:
        print('dropped: ' + ', '.join(dropped))
    return dict(converted=len(converted), dropped=dropped, dst=args.dst)


def convert_classifier(args, state: dict, convert_fn) -> dict:
    """The ImageNet classifier: backbone + ``head`` -> mmpretrain layout."""
    check_output_path(args.dst, [args.src])
    missing = [k for k in ('head.weight', 'head.bias') if k not in state]
    if missing:
        raise SystemExit(f'error: --classifier needs the ImageNet '
                         f'classifier file; {args.src} has no {missing}')
    converted = {'backbone.' + k: v for k, v in convert_fn(state).items()}
    converted['head.fc.weight'] = state['head.weight']
    converted['head.fc.bias'] = state['head.bias']
    meta = dict(source=osp.abspath(args.src),
                converter=f'{convert_fn.__name__} + head -> head.fc',
                layout='mmpretrain ImageClassifier',
                num_source_keys=len(state),
                num_converted_keys=len(converted))
    save_checkpoint_atomic({'state_dict': converted, 'meta': meta},
                           args.dst, inputs=[args.src])
    print(f'classifier: converted {len(converted)} keys -> {args.dst}')
    return dict(converted=len(converted), dropped=[], dst=args.dst)


def cli(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an official ResT v1 / v2 checkpoint to '
        'mmvitmix.')
    parser.add_argument('src', help='official checkpoint file')
    parser.add_argument('dst', help='output file (parent folders created)')
    parser.add_argument('--allow-pickle', action='store_true',
                        help='load SRC with weights_only=False (trusted '
                        'files only)')
    parser.add_argument('--whole-model', action='store_true',
                        help='SRC is a whole detectron2 detector / mmseg '
                        '0.x segmentor (found automatically)')
    parser.add_argument('--config', help='whole models: the mmvitmix '
                        'config the result must load into')
    parser.add_argument('--classifier', action='store_true',
                        help='ImageNet files: keep the head, write '
                        "mmpretrain's ImageClassifier layout")
    args = parser.parse_args(argv)
    check_output_path(args.dst, [args.src])
    state = unwrap_state_dict(load_source(args.src, args.allow_pickle))
    # another family's file (official or converted) is refused by name
    found = check_source_family(args.src, state, ('ResT', 'ResTV2'))
    version = 2 if (found.family == 'ResTV2' if found is not None else
                    is_restv2_state(state)) else 1
    convert_fn = convert_restv2 if version == 2 else convert_rest
    print(f'ResT v{version} checkpoint ({args.src})')
    if args.whole_model or whole_model_layout(state) is not None:
        return convert_whole(args, state, convert_fn)
    if args.classifier:
        return convert_classifier(args, state, convert_fn)
    if args.config:
        parser.error('--config applies to whole detector / segmentor files')
    rest = [args.src, args.dst] + (['--allow-pickle']
                                   if args.allow_pickle else [])
    return main(convert_fn, parser.description, rest)


if __name__ == '__main__':
    run(cli)
