"""Inference throughput (images/s) of the classifiers, like the papers'
throughput columns.

Each model is the backbone with its official classification head (as
``get_flops.py`` builds it) in eval mode under ``torch.no_grad()``, fed
random ``--batch`` x 3 x ``--size`` x ``--size`` images; reported are the
images per second by the median (and by the fastest) of ``--repeats``
timed batches after ``--warmup`` untimed ones, with the device, torch, the
attention backend (``--backend``, set through ``MMVITMIX_ATTN_BACKEND``;
it matters for RMT and ResT only), threads and AMP dtype in the output.
Each model runs in a fresh subprocess (:func:`mmvitmix.utils.bench.run_child`).

The papers measure on one GPU at large batches (RMT and ResT: V100/A100
class GPUs, batch 64-256, fp32 or AMP); CPU figures are not comparable to
them. Examples::

    python tools/analysis_tools/benchmark_throughput.py --device cpu \\
        --batch 8 --threads 2 --models RMT:t RMT:s ResT:small
    python tools/analysis_tools/benchmark_throughput.py --device cuda \\
        --batch 128 --amp fp16 --backend sdpa
"""
import argparse
import json
import os
import statistics
import sys

import torch

from mmvitmix.utils.bench import device_name, measure_step, run_child
from mmvitmix.apis import cli
from mmvitmix.apis.cli import ToolError, run

ALL_MODELS = [
    'RMT:t', 'RMT:s', 'RMT:b', 'RMT:l', 'ResT:lite', 'ResT:small',
    'ResT:base', 'ResT:large', 'ContainerLight:light', 'RIFormer:s12',
    'RIFormer:s24', 'RIFormer:s36', 'RIFormer:m36', 'RIFormer:m48'
]


def measure(args, model_name):
    """Wall times (s) of the timed batches of ``model_name``."""
    from get_flops import build_classifier
    kind, arch = model_name.split(':')
    os.environ['MMVITMIX_ATTN_BACKEND'] = args.backend
    torch.manual_seed(0)
    model = build_classifier(kind, arch).to(args.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
    amp = dict(bf16=torch.bfloat16, fp16=torch.float16).get(args.amp)

    def step():
        with torch.no_grad(), torch.autocast(
                args.device, dtype=amp, enabled=amp is not None):
            model(x)

    return measure_step(step, args.device, args.warmup, args.repeats, 'time')


def check_args(args):
    """Refuse what cannot be measured before any process starts."""
    cli.device('--device', args.device)
    cli.count('--batch', args.batch)
    cli.positive_shape('--size', args.size)
    cli.threads('--threads', args.threads)
    cli.count('--warmup', args.warmup, 0)
    cli.count('--repeats', args.repeats)
    if args.backend == 'fused' and args.device == 'cpu':
        raise ToolError("--backend fused: the fused kernels run on CUDA "
                        "only; on the CPU choose from 'auto', 'sdpa', "
                        "'flex', 'reference'")
    for name in args.models:
        if name not in ALL_MODELS:
            raise ToolError(f'--models: unknown model {name!r}; choose from '
                            f'{ALL_MODELS}')


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n', 1)[1])
    parser.add_argument('--models', nargs='+', default=ALL_MODELS,
                        help='TYPE:ARCH, e.g. RMT:s (default: all 14)')
    parser.add_argument('--device', default='cuda'
                        if torch.cuda.is_available() else 'cpu',
                        choices=['cpu', 'cuda'])
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--backend', default='auto', choices=[
        'auto', 'fused', 'sdpa', 'flex', 'reference'])
    parser.add_argument('--amp', default='none',
                        choices=['none', 'bf16', 'fp16'])
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_args(args)
    torch.set_num_threads(args.threads)
    if args.child is not None:
        print(json.dumps(measure(args, json.loads(args.child))))
        return None
    header = (f'# device: {device_name(args.device)}; torch '
              f'{torch.__version__}; attention backend {args.backend}; batch '
              f'{args.batch}; {args.size}x{args.size}; amp {args.amp}; '
              f'threads {args.threads}; {args.repeats} timed batches after '
              f'{args.warmup} warm-up; images/s by the median (by the '
              'fastest batch)')
    print(header)
    print('| model | backend | images/s | ms/batch (median) |')
    print('|---|---|---|---|', flush=True)
    base = [
        sys.executable, __file__, '--device', args.device, '--batch',
        str(args.batch), '--size', str(args.size), '--backend', args.backend,
        '--amp', args.amp, '--threads', str(args.threads), '--warmup',
        str(args.warmup), '--repeats', str(args.repeats)
    ] + (['--channels-last'] if args.channels_last else [])
    results = {}
    for name in args.models:
        times = run_child(base, name, 'time')
        if not times:
            print(f'| {name} | {args.backend} | failed | - |', flush=True)
            continue
        med, best = statistics.median(times), min(times)
        results[name] = args.batch / med
        print(f'| {name} | {args.backend} | {args.batch / med:.1f} '
              f'({args.batch / best:.1f}) | {1e3 * med:.1f} |', flush=True)
    return results


if __name__ == '__main__':
    run(main)
