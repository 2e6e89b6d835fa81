"""Benchmark the depthwise convolutions' weight gradient on CPU: torch's own
(oneDNN's backward-weights primitive) against ``mmvitmix.ops.dwconv``'s
compiled kernel, for the depthwise layers of RMT-S at 512x512.

Each row also shows the forward conv, for scale. Both gradients are checked
against each other (float32, relative max difference) before timing. Times
are median (min) ms over ``--repeats`` runs after ``--warmup``, the two
methods alternating in one process.

Example::

    python tools/analysis_tools/benchmark_dwconv.py --threads 1
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mmvitmix.utils.bench import cpu_name, time_cell
from mmvitmix.apis import cli
from mmvitmix.apis.cli import ToolError, run

# (layer, channels, grid, kernel) at 512x512 input
LAYERS = [
    ('RMT-S stage 1 LePE', 64, 128, 5),
    ('RMT-S stage 1 CPE', 64, 128, 3),
    ('RMT-S stage 1 FFN', 256, 128, 3),
    ('RMT-S stage 2 LePE', 128, 64, 5),
    ('RMT-S stage 2 FFN', 512, 64, 3),
    ('RMT-S stage 3 LePE', 256, 32, 5),
    ('RMT-S stage 3 FFN', 768, 32, 3),
    ('RMT-S stage 4 LePE', 512, 16, 5),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=9)
    args = parser.parse_args(argv)
    cli.threads('--threads', args.threads)
    cli.count('--warmup', args.warmup, 0)
    cli.count('--repeats', args.repeats)
    torch.set_num_threads(args.threads)
    from mmvitmix.ops import dwconv, extension
    if not extension.has_kernel('dwconv_weight_grad', 'cpu'):
        why = (f'mmvitmix._ext did not load ({extension.ext_error()})'
               if extension.ext_error() else 'mmvitmix._ext has no CPU '
               'kernel of it')
        raise ToolError('the compiled depthwise-conv weight gradient is not '
                        f'available: {why}; build the extension with '
                        '`python setup.py build_ext --inplace`')
    op = dwconv._weight_grad_op()
    print(f'# device: {cpu_name()}; torch {torch.__version__}; float32; '
          f'batch 1; threads {args.threads}; ms as median (min) of '
          f'{args.repeats} runs after {args.warmup} warm-up')
    print('| layer | channels | grid | kernel | forward ms | weight grad: '
          'torch (oneDNN) ms | weight grad: mmvitmix ms | speed-up | '
          'max rel. diff |')
    print('|---|---|---|---|---|---|---|---|---|')
    for name, channels, grid, k in LAYERS:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, grid, grid, channels, generator=gen)
        grad = torch.randn(1, grid, grid, channels, generator=gen)
        weight = torch.randn(channels, 1, k, k, generator=gen)
        x_nchw, g_nchw, pad = x.permute(0, 3, 1, 2), grad.permute(
            0, 3, 1, 2), (k // 2, k // 2)
        runs = {
            'forward':
            lambda: F.conv2d(x_nchw, weight, None, padding=pad,
                             groups=channels),
            'torch':
            lambda: dwconv.dwconv_weight_grad_reference(
                g_nchw, x_nchw, weight, pad),
            'ours':
            lambda: op(grad, x, k, k, *pad),
        }
        ref, got = runs['torch'](), runs['ours']()
        diff = ((got - ref).abs().max() / ref.abs().max()).item()
        with torch.no_grad():
            for fn in runs.values():
                for _ in range(args.warmup):
                    fn()
            times = {key: [] for key in runs}
            for _ in range(args.repeats):
                for key, fn in runs.items():
                    start = time.perf_counter()
                    fn()
                    times[key].append((time.perf_counter() - start) * 1e3)
        speed = statistics.median(times['torch']) / statistics.median(
            times['ours'])
        print(f'| {name} | {channels} | {grid}x{grid} | {k}x{k} | '
              f'{time_cell(times["forward"], 2)} | '
              f'{time_cell(times["torch"], 2)} | '
              f'{time_cell(times["ours"], 2)} | {speed:.1f}x | {diff:.1e} |',
              flush=True)


if __name__ == '__main__':
    run(main)
