"""Benchmark whole backbones side by side: time, peak memory, forward MACs.

One row per (model, method, input, mode), so that one command shows what a
detection or segmentation user chooses between:

* mmvitmix's backbones (``--models``: ``rmt_t`` ... ``rmt_l``,
  ``rest_lite`` ... ``rest_large``, ``container_light``, ``riformer_s12``
  ... ``riformer_m48``), RMT and ResT with each attention backend
  (``--methods``: ``auto``, ``sdpa``, ``flex``, ``fused``, ``reference``;
  set per run through ``MMVITMIX_ATTN_BACKEND``);
* ``official``: the authors' own RMT / ResT code (RMT:
  ``classfication_release/RMT.py``'s ``forward_features``; ResT:
  ``models/rest.py``), same input. The official sources are never part of
  this project: fetch the repositories and point ``--official-dir`` at a
  folder holding ``RMT.py`` and ``rest.py``; their loader (stand-ins for the
  few timm helpers they import) is ``../shared/bench/official_models.py``
  (``--official-loader``);
* the peers users pick instead (``--peers``): MMDetection's Swin-T
  (``swin_t``, as in ``mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py``) and
  ResNet-50 (``r50``, as in ``mask-rcnn_r50_fpn_1x_coco.py``: stem and
  stage 1 frozen, BatchNorm in eval mode, as users train it), and any
  registered backbone by config (``--configs CFG ...``: the config's
  ``model.backbone``, its ``custom_imports`` honoured).

Inference is eval mode without grad; ``fwd+bwd`` is train mode, loss = sum
of the stage outputs, backward. Weights are random (speed does not depend on
them), drop path off everywhere. Each measurement runs in a fresh
subprocess, the methods alternating for ``--rounds`` rounds of ``--warmup``
+ ``--repeats`` runs; reported are the median (and minimum) wall time, the
ratio to the official time and to Swin-T's (below 1 is faster), the peak
memory of one more run in its own process (CUDA: ``max_memory_allocated``
above the level before the run; CPU: the peak resident set above the level
before the run) and the forward multiply-adds counted by mmengine's
``FlopAnalyzer`` (attention matmuls included, see ``get_flops.py``).
FlexAttention on CPU runs inference only.

Examples::

    python tools/analysis_tools/benchmark_backbone.py --device cpu \\
        --threads 2 --models rmt_t rmt_s --methods official auto \\
        --peers swin_t r50 --inputs det800x1344 --modes fwd+bwd \\
        --official-dir DIR
    python tools/analysis_tools/benchmark_backbone.py --device cuda \\
        --batch 2 --inputs det800x1344 --modes fwd+bwd infer
"""
import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch

from mmvitmix.utils.bench import (BACKBONE_MODELS, backbone_step,
                                  build_official_backbone, device_name,
                                  measure_step, memory_cell, run_child,
                                  time_cell)
from mmvitmix.apis import cli
from mmvitmix.apis.cli import ToolError, run

ROOT = Path(__file__).resolve().parents[2]

INPUTS = {
    'seg512': (512, 512),
    'det800x1333': (800, 1333),
    'det800x1344': (800, 1344),  # 800x1333 padded to a multiple of 32
}
MODELS = BACKBONE_MODELS
#: the backbones of MMDetection's own Swin-T and ResNet-50 detectors
PEERS = {
    'swin_t':
    dict(type='mmdet.SwinTransformer', embed_dims=96, depths=(2, 2, 6, 2),
         num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4,
         qkv_bias=True, drop_path_rate=0., patch_norm=True,
         out_indices=(0, 1, 2, 3), with_cp=False),
    'r50':
    dict(type='mmdet.ResNet', depth=50, num_stages=4,
         out_indices=(0, 1, 2, 3), frozen_stages=1,
         norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True,
         style='pytorch'),
}
#: attention backends (RMT and ResT only)
BACKENDS = ('auto', 'sdpa', 'flex', 'fused', 'reference')
METHODS = ('official', ) + BACKENDS


def build_backbone(args, model_name, method):
    """The model to time and the function to call on the input."""
    from mmengine.registry import MODELS as ROOT_MODELS
    torch.manual_seed(0)
    if model_name in PEERS:
        import mmdet.models  # noqa: F401  (registers mmdet's backbones)
        model = ROOT_MODELS.build(dict(PEERS[model_name]))
        return model, model
    if model_name.startswith('config:'):
        from mmengine.config import Config
        cfg = Config.fromfile(model_name[len('config:'):])
        if cfg.get('custom_imports'):
            from mmengine.utils import import_modules_from_strings
            import_modules_from_strings(**cfg.custom_imports)
        from mmengine.registry import init_default_scope
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        import mmvitmix.models  # noqa: F401
        backbone = dict(cfg.model.backbone)
        backbone.pop('init_cfg', None)  # random weights, as everywhere here
        if 'drop_path_rate' in backbone:
            backbone['drop_path_rate'] = 0.
        model = ROOT_MODELS.build(backbone)
        return model, model
    kind, arch, official_file, ctor = MODELS[model_name]
    if method != 'official':
        import mmvitmix.models  # noqa: F401
        os.environ['MMVITMIX_ATTN_BACKEND'] = method
        model = ROOT_MODELS.build(
            dict(type=f'mmvitmix.{kind}', arch=arch, drop_path_rate=0.,
                 out_indices=(0, 1, 2, 3)))
        return model, model
    return build_official_backbone(args.official_loader, args.official_dir,
                                   model_name)


def forward_macs(args, model_name, size):
    """Forward multiply-adds of one image (mmengine's FlopAnalyzer)."""
    from mmengine.analysis import FlopAnalyzer

    import mmvitmix.ops.flops as flops
    flops.register_mmengine_handles()
    model, fn = build_backbone(args, model_name, 'auto')
    model.eval()

    class Wrap(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return fn(x)

    import warnings
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        analyzer = FlopAnalyzer(Wrap(), (torch.randn(1, 3, *size), ))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        return analyzer.total()


def measure(args, model_name, size, mode, method, what):
    """Wall times (s) of the timed runs, the peak extra memory (MiB) or the
    forward MACs."""
    if what == 'macs':
        return forward_macs(args, model_name, size)
    model, fn = build_backbone(args, model_name, method)
    model = model.to(args.device)
    train = mode == 'fwd+bwd'
    model.train(train)
    x = torch.randn(args.batch, 3, *size, device=args.device)
    amp = dict(bf16=torch.bfloat16, fp16=torch.float16).get(args.amp)

    def step():
        backbone_step(model, fn, x, train, amp)

    return measure_step(step, args.device, args.warmup, args.repeats, what)


def ratio(times, base):
    if not times or not base:
        return '-'
    return f'{statistics.median(times) / statistics.median(base):.2f}'


def check_args(args):
    """Refuse what cannot be measured before any process starts."""
    cli.timing_args(args)
    if args.child is not None:
        return
    for config in args.configs:
        cfg = cli.config_file('--configs', config)
        if not isinstance(cfg.get('model'), dict) or \
                not isinstance(cfg.model.get('backbone'), dict):
            raise ToolError(f'--configs {config!r} has no model.backbone '
                            'to benchmark')
    if args.methods is None:
        args.methods = (['official'] if args.official_dir else []) + [
            b for b in BACKENDS if b != 'fused' or args.device == 'cuda'
        ]
    if 'fused' in args.methods and args.device == 'cpu':
        raise ToolError("--methods fused: the fused kernels run on CUDA "
                        "only; on the CPU choose from 'auto', 'sdpa', "
                        "'flex', 'reference'")
    if 'official' in args.methods:
        if not args.official_dir:
            raise ToolError('--methods official needs --official-dir (a '
                            'folder holding the official RMT.py and rest.py)')
        families = {MODELS[m][2] for m in args.models} - {None}
        cli.existing_dir('--official-dir', args.official_dir,
                         sorted(families))
        cli.existing_dir('--official-loader', args.official_loader,
                         ['official_models.py'])
    if not (args.models or args.peers or args.configs):
        raise ToolError('nothing to measure: give --models, --peers or '
                        '--configs')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda'
                        if torch.cuda.is_available() else 'cpu',
                        choices=['cpu', 'cuda'])
    parser.add_argument('--models', nargs='*', default=['rmt_s'],
                        choices=list(MODELS))
    parser.add_argument('--methods', nargs='+', default=None,
                        choices=list(METHODS),
                        help='for RMT and ResT (default: official when '
                        '--official-dir is given, then every backend that '
                        'runs on the device)')
    parser.add_argument('--peers', nargs='*', default=[],
                        choices=list(PEERS))
    parser.add_argument('--configs', nargs='*', default=[],
                        help='configs whose model.backbone is benchmarked')
    parser.add_argument('--official-dir', help='folder with the official '
                        'RMT.py and rest.py (never committed)')
    parser.add_argument('--official-loader',
                        default=str(ROOT.parent / 'shared' / 'bench'),
                        help='folder of official_models.py')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--amp', default='none',
                        choices=['none', 'bf16', 'fp16'])
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--rounds', type=int, default=2,
                        help='alternating subprocesses per method')
    parser.add_argument('--inputs', nargs='+', default=['seg512'],
                        choices=list(INPUTS))
    parser.add_argument('--modes', nargs='+', default=['infer', 'fwd+bwd'],
                        choices=['infer', 'fwd+bwd'])
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory run of each case')
    parser.add_argument('--no-macs', action='store_true',
                        help='skip counting forward MACs')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_args(args)
    return args


def cases(args):
    """(model, method) pairs in table order."""
    out = []
    for model in args.models:
        kind = MODELS[model][0]
        if kind in ('RMT', 'ResT'):
            out += [(model, m) for m in args.methods]
        else:
            out.append((model, 'auto'))
    out += [(peer, 'mmdet') for peer in args.peers]
    out += [(f'config:{c}', 'config') for c in args.configs]
    return out


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child is not None:
        model, name, mode, method, what = json.loads(args.child)
        print(json.dumps(measure(args, model, INPUTS[name], mode, method,
                                 what)))
        return

    print(f'# device: {device_name(args.device)}; torch {torch.__version__}; '
          f'batch {args.batch}; amp {args.amp}; threads {args.threads}; '
          f'{args.rounds} rounds x {args.repeats} timed runs after '
          f'{args.warmup} warm-up, each method in fresh processes; seconds '
          'as median (min); x official / x swin_t: ratio of the medians; '
          'peak MiB: one more run in its own process; GMACs: forward, one '
          'image')
    header = ['model', 'method', 'input', 'mode', 'seconds', 'x official',
              'x swin_t', 'peak MiB', 'GMACs']
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    base_cmd = [
        sys.executable, __file__, '--device', args.device, '--batch',
        str(args.batch), '--amp', args.amp, '--threads', str(args.threads),
        '--warmup', str(args.warmup), '--repeats', str(args.repeats),
        '--official-loader', args.official_loader
    ] + (['--official-dir', args.official_dir] if args.official_dir else [])
    pairs = cases(args)
    for name in args.inputs:
        macs = {}
        if not args.no_macs:
            for model in dict.fromkeys(m for m, _ in pairs):
                macs[model] = run_child(
                    base_cmd, [model, name, 'infer', 'auto', 'macs'], 'macs')
        for mode in args.modes:
            run = [(m, meth) for m, meth in pairs
                   if not (meth == 'flex' and mode == 'fwd+bwd'
                           and args.device == 'cpu')]
            times = {pair: [] for pair in run}
            for _ in range(args.rounds):
                for model, method in run:
                    res = run_child(base_cmd,
                                    [model, name, mode, method, 'time'],
                                    'time')
                    if res is not None:
                        times[(model, method)] += res
            swin = times.get(('swin_t', 'mmdet'))
            for model, method in run:
                official = times.get((model, 'official'))
                mem = None
                if not args.no_memory:
                    mem = run_child(base_cmd,
                                    [model, name, mode, method, 'memory'],
                                    'memory')
                gmacs = macs.get(model)
                cells = [
                    model.replace('config:', ''), method, name, mode,
                    time_cell(times[(model, method)], 2),
                    ratio(times[(model, method)], official)
                    if method != 'official' else '1.00',
                    ratio(times[(model, method)], swin),
                    memory_cell(mem),
                    f'{gmacs / 1e9:.1f}' if gmacs else '-'
                ]
                print('| ' + ' | '.join(cells) + ' |', flush=True)


if __name__ == '__main__':
    run(main)
