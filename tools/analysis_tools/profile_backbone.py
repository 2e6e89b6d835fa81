"""Profile one backbone op by op: where its time goes and what it keeps for
backward, beside the official code.

For each ``--code`` (``mmvitmix`` and, with ``--official-dir``, the
authors' ``official`` RMT / ResT code), one warm-up step, then one profiled
step (torch.profiler, CPU), printing

* the ``--top`` operators by self time (torch's own table);
* in ``fwd+bwd`` mode, the tensors saved for backward (distinct storages,
  counted by ``torch.autograd.graph.saved_tensors_hooks``) per stage and the
  largest of them by producing op and shape: on the CPU these are what sets
  the peak memory of a training step.

The official sources are never part of this project: ``--official-dir`` is a
folder holding qhfan/RMT's ``classfication_release/RMT.py`` and wofmanaf/
ResT's ``models/rest.py``, loaded by ``--official-loader``'s
``official_models.py`` (see ``benchmark_backbone.py``).

Examples::

    python tools/analysis_tools/profile_backbone.py rmt_s --size 800 1344 \\
        --mode fwd+bwd --threads 2 --official-dir DIR
    python tools/analysis_tools/profile_backbone.py rest_small --size 512 \\
        --mode infer --threads 1
"""
import argparse
import collections
import os
from pathlib import Path

import torch

from mmvitmix.apis import cli
from mmvitmix.apis.cli import ToolError, run
from mmvitmix.utils.bench import (BACKBONE_MODELS, backbone_step,
                                  build_official_backbone)

ROOT = Path(__file__).resolve().parents[2]
#: the backbones that have official code to compare with
MODELS = {name: row for name, row in BACKBONE_MODELS.items() if row[2]}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('model', choices=list(MODELS))
    parser.add_argument('--size', type=int, nargs='+', default=[512],
                        metavar=('H', 'W'), help='input H [W] (default 512)')
    parser.add_argument('--mode', default='fwd+bwd',
                        choices=['infer', 'fwd+bwd'])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--top', type=int, default=15,
                        help='operators and saved tensors listed')
    parser.add_argument('--code', nargs='+', default=None,
                        choices=['mmvitmix', 'official'],
                        help='default: official (with --official-dir), '
                        'then mmvitmix')
    parser.add_argument('--official-dir',
                        help='folder with the official RMT.py and rest.py')
    parser.add_argument('--official-loader',
                        default=str(ROOT.parent / 'shared' / 'bench'),
                        help='folder of official_models.py')
    args = parser.parse_args(argv)
    cli.positive_shape('--size', args.size)
    cli.threads('--threads', args.threads)
    cli.count('--top', args.top)
    if args.code is None:
        args.code = (['official'] if args.official_dir else []) + [
            'mmvitmix'
        ]
    if 'official' in args.code:
        if not args.official_dir:
            raise ToolError('--code official needs --official-dir (a folder '
                            'with the official RMT.py and rest.py)')
        cli.existing_dir('--official-dir', args.official_dir,
                         [MODELS[args.model][2]])
    return args


def build(args, code):
    """(module to put in train/eval mode, callable on the input)."""
    kind, arch, official_file, ctor = MODELS[args.model]
    if code == 'mmvitmix':
        from mmvitmix.models import backbones
        # the class itself: a registry build would follow whatever default
        # scope the process has set
        model = getattr(backbones, kind)(
            arch=arch, drop_path_rate=0., out_indices=(0, 1, 2, 3))
        return model, model
    return build_official_backbone(args.official_loader, args.official_dir,
                                   args.model)


def stage_of(model):
    """Forward pre-hooks that record which stage runs (for the saved-tensor
    table); the official models' stages are named layers / stageN."""
    current = ['stem']
    for name, module in model.named_children():
        if name in ('layers', 'stages'):
            for i, stage in enumerate(module):
                stage.register_forward_pre_hook(
                    lambda *_, i=i: current.__setitem__(0, f'stage{i}'))
        elif name.startswith(('stage', 'patch_embed_')):
            label = 'stage' + str(int(name[-1]) - 1)
            parts = (list(module) if isinstance(module, torch.nn.ModuleList)
                     else [module])
            for part in parts:
                part.register_forward_pre_hook(
                    lambda *_, label=label: current.__setitem__(0, label))
    return current


def profile(args, code):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    model, fn = build(args, code)
    train = args.mode == 'fwd+bwd'
    model.train(train)
    size = args.size * 2 if len(args.size) == 1 else args.size
    x = torch.randn(1, 3, *size)
    backbone_step(model, fn, x, train)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        backbone_step(model, fn, x, train)
    print(f'## {args.model} ({code}), {size[0]}x{size[1]}, {args.mode}, '
          f'{args.threads} thread(s)')
    print(prof.key_averages().table(
        sort_by='self_cpu_time_total', row_limit=args.top,
        max_name_column_width=60))
    if not train:
        return
    current = stage_of(model)
    seen, by_stage = {}, collections.Counter()
    by_op = collections.Counter()

    def pack(t):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in seen:
            seen[key] = storage.nbytes()
            by_stage[current[0]] += storage.nbytes()
            op = (t.grad_fn.name() if t.grad_fn is not None else
                  ('parameter' if t.requires_grad else 'constant'))
            by_op[(current[0], op, tuple(t.shape))] += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x)
    del out
    mib = 2**20
    print(f'saved for backward: {sum(seen.values()) / mib:.0f} MiB; by '
          'stage: ' + ', '.join(f'{k} {v / mib:.0f}'
                                for k, v in sorted(by_stage.items())))
    for (stage, op, shape), nbytes in by_op.most_common(args.top):
        print(f'  {nbytes / mib:8.1f} MiB  {stage:7s} {op:40s} {shape}')


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    for code in args.code:
        profile(args, code)


if __name__ == '__main__':
    run(main)
