"""Benchmark whole backbones: every attention backend, and the official code.

RMT-T, RMT-S and ResT-Small (``--models``) at the inputs of a 512×512
segmentation crop and a 800×1333 detection image; inference (eval mode, no
grad) and forward + backward (train mode, loss = sum of the stage outputs).
Methods (``--methods``): the mmvitmix backends (``auto``, ``sdpa``,
``flex``, ``fused``, ``reference``; set per run through
``MMVITMIX_ATTN_BACKEND``) and ``official``, the authors' own model (RMT:
``classfication_release/RMT.py``'s ``forward_features``; ResT:
``models/rest.py``) with its default arguments. The official sources are
never part of this project: fetch the repositories and point
``--official-dir`` at a folder holding ``RMT.py`` and ``rest.py`` (see
``../shared/bench/perf_vs_official.py``'s docstring); the loader for them
(stand-ins for the few timm helpers they import) is
``../shared/bench/official_models.py`` (``--official-loader``).

Each configuration runs in fresh subprocesses, the methods alternating for
``--rounds`` rounds of ``--warmup`` + ``--repeats`` runs; reported are the
median and the minimum wall time over all timed runs, the ratio to the
official time (below 1 is faster) and, with ``--memory``, the peak extra
memory of one run (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the peak
resident memory above the level before the run, in a separate subprocess).
Weights are random in both (speed does not depend on them), drop path is
off in both; FlexAttention on CPU
runs inference only (torch has no CPU backward for it).

Examples::

    python tools/analysis_tools/benchmark_backbone.py --device cpu \\
        --threads 1 --models rmt_s --inputs seg512 --modes infer \\
        --official-dir /path/to/official
    python tools/analysis_tools/benchmark_backbone.py --device cuda \\
        --batch 2 --inputs det800x1333 --modes fwd+bwd --memory
"""
import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch

from mmvitmix.utils.bench import (device_name, load_official_models,
                                  measure_step, memory_cell, run_child,
                                  time_cell)

ROOT = Path(__file__).resolve().parents[2]

INPUTS = {'seg512': (512, 512), 'det800x1333': (800, 1333)}
MODELS = {
    # name: (mmvitmix type, arch, official file, official constructor)
    'rmt_t': ('RMT', 't', 'RMT.py', 'RMT_T3'),
    'rmt_s': ('RMT', 's', 'RMT.py', 'RMT_S'),
    'rest_small': ('ResT', 'small', 'rest.py', 'rest_small'),
}
METHODS = ('official', 'auto', 'sdpa', 'flex', 'fused', 'reference')


def build(args, model_name, method):
    """The model to time and the function to call on the input."""
    from mmvitmix.models.backbones.rest import ResT
    from mmvitmix.models.backbones.rmt import RMT
    kind, arch, official_file, ctor = MODELS[model_name]
    torch.manual_seed(0)
    if method != 'official':
        os.environ['MMVITMIX_ATTN_BACKEND'] = method
        cls = RMT if kind == 'RMT' else ResT
        model = cls(arch=arch, drop_path_rate=0., out_indices=(0, 1, 2, 3))
        return model, model
    if not args.official_dir:
        sys.exit('method official needs --official-dir')
    om = load_official_models(args.official_loader)
    path = os.path.join(args.official_dir, official_file)
    if kind == 'RMT':
        mod = om.load_rmt_cls(path)
        fn = getattr(mod, ctor)
        model = fn(None) if 'args' in fn.__code__.co_varnames else fn()
        # their drop path is on by default; switch it off as for ours
        for m in model.modules():
            if type(m).__name__ == 'DropPath':
                m.drop_prob = 0.
    else:
        model = getattr(om.load_rest_cls(path), ctor)()
    return model, getattr(model, 'forward_features', model)


def measure(args, model_name, size, mode, method, what):
    """Wall times (s) of the timed runs, or the peak extra memory (MiB)."""
    model, fn = build(args, model_name, method)
    model = model.to(args.device)
    train = mode == 'fwd+bwd'
    model.train(train)
    x = torch.randn(args.batch, 3, *size, device=args.device)
    amp = dict(bf16=torch.bfloat16, fp16=torch.float16).get(args.amp)

    def step():
        with torch.autocast(args.device, dtype=amp, enabled=amp is not None):
            if not train:
                with torch.no_grad():
                    fn(x)
                return
            out = fn(x)
            outs = out if isinstance(out, (tuple, list)) else [out]
            loss = sum(o.float().sum() for o in outs)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return measure_step(step, args.device, args.warmup, args.repeats, what)


def ratio_cell(times, official):
    if not times or not official:
        return '-'
    return f'{statistics.median(times) / statistics.median(official):.2f}'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda'
                        if torch.cuda.is_available() else 'cpu',
                        choices=['cpu', 'cuda'])
    parser.add_argument('--models', nargs='+', default=['rmt_s'],
                        choices=list(MODELS))
    parser.add_argument('--methods', nargs='+', default=list(METHODS),
                        choices=list(METHODS))
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
    parser.add_argument('--inputs', nargs='+', default=list(INPUTS),
                        choices=list(INPUTS))
    parser.add_argument('--modes', nargs='+', default=['infer', 'fwd+bwd'],
                        choices=['infer', 'fwd+bwd'])
    parser.add_argument('--memory', action='store_true',
                        help='also measure peak memory (one more run each)')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child is not None:
        model, name, mode, method, what = json.loads(args.child)
        print(json.dumps(measure(args, model, INPUTS[name], mode, method,
                                 what)))
        return

    methods = [m for m in args.methods
               if m != 'official' or args.official_dir]
    print(f'# device: {device_name(args.device)}; torch {torch.__version__}; '
          f'batch {args.batch}; amp {args.amp}; threads {args.threads}; '
          f'{args.rounds} rounds x {args.repeats} timed runs after '
          f'{args.warmup} warm-up; seconds as median (min); ratio = median '
          'over the official median')
    header = ['model', 'input', 'mode']
    for m in methods:
        header += [f'{m} s'] + (['ratio'] if m != 'official' else [])
        if args.memory:
            header.append(f'{m} MiB')
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    base_cmd = [
        sys.executable, __file__, '--device', args.device, '--batch',
        str(args.batch), '--amp', args.amp, '--threads', str(args.threads),
        '--warmup', str(args.warmup), '--repeats', str(args.repeats),
        '--official-loader', args.official_loader
    ] + (['--official-dir', args.official_dir] if args.official_dir else [])

    for model in args.models:
        for name in args.inputs:
            for mode in args.modes:
                run_methods = [
                    m for m in methods
                    if not (m == 'flex' and mode == 'fwd+bwd'
                            and args.device == 'cpu')
                ]
                times = {m: [] for m in methods}
                for _ in range(args.rounds):
                    for method in run_methods:
                        res = run_child(base_cmd,
                                        [model, name, mode, method, 'time'],
                                        'time')
                        if res is not None:
                            times[method] += res
                cells = []
                for method in methods:
                    if method not in run_methods:
                        cells += ['n/a'] + (['-'] if method != 'official'
                                            else [])
                        if args.memory:
                            cells.append('-')
                        continue
                    cells.append(time_cell(times[method], 3))
                    if method != 'official':
                        cells.append(
                            ratio_cell(times[method], times.get('official')))
                    if args.memory:
                        mem = run_child(base_cmd,
                                        [model, name, mode, method, 'memory'],
                                        'memory')
                        cells.append(memory_cell(mem))
                print(f'| {model} | {name} | {mode} | ' + ' | '.join(cells) +
                      ' |', flush=True)


if __name__ == '__main__':
    main()
