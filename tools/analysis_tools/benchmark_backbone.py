"""Benchmark the RMT-S backbone with the fused attention ops vs the reference.

Inputs of a 800×1333 detection image and a 512×512 segmentation crop;
inference (eval mode, no grad) and forward + backward (train mode, loss =
sum of the four stage outputs); the fused path and the reference path
(``MMVITMIX_FORCE_REFERENCE=1``) side by side. Each configuration runs in
fresh subprocesses, the two paths alternating for ``--rounds`` rounds of
``--warmup`` + ``--repeats`` runs; reported are the median and the minimum
wall time over all timed runs (on a shared machine the minimum is the less
disturbed figure) and the peak extra memory of one run (CUDA:
``torch.cuda.max_memory_allocated``; CPU: the peak resident memory above
the level before the run, measured in a separate subprocess in which glibc
returns large blocks to the OS, which would distort timings). Weights are
random (speed does not depend on them).

Examples::

    python tools/analysis_tools/benchmark_backbone.py --device cpu \\
        --threads 2 --inputs seg512 --modes infer
    python tools/analysis_tools/benchmark_backbone.py --device cuda \\
        --batch 2 --amp bf16
"""
import argparse
import json
import os
import sys
from pathlib import Path

import torch

# benchmark the checkout this script belongs to, whatever is installed
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_utils import (device_name, measure_step, memory_cell,  # noqa
                          run_child, speedup_cell, time_cell)

INPUTS = {'det800x1333': (800, 1333), 'seg512': (512, 512)}


def measure(args, size, mode, method, what):
    """Wall times (s) of the timed runs, or the peak extra memory (MiB)."""
    from mmvitmix.ops import _dispatch
    if method == 'fused' and not _dispatch.load_ext():
        sys.exit(f'mmvitmix._ext is not built: {_dispatch.ext_error()}')
    os.environ['MMVITMIX_FORCE_REFERENCE'] = '1' if method == 'reference' \
        else '0'
    from mmvitmix.models.backbones.rmt import RMT
    torch.manual_seed(0)
    model = RMT(arch=args.arch, drop_path_rate=0.).to(args.device)
    train = mode == 'fwd+bwd'
    model.train(train)
    x = torch.randn(args.batch, 3, *size, device=args.device)
    amp = dict(bf16=torch.bfloat16, fp16=torch.float16).get(args.amp)

    def step():
        with torch.autocast(args.device, dtype=amp, enabled=amp is not None):
            if train:
                loss = sum(o.float().sum() for o in model(x))
            else:
                with torch.no_grad():
                    model(x)
                return
        loss.backward()
        model.zero_grad(set_to_none=True)

    return measure_step(step, args.device, args.warmup, args.repeats, what)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda'
                        if torch.cuda.is_available() else 'cpu',
                        choices=['cpu', 'cuda'])
    parser.add_argument('--arch', default='s', help='RMT arch name')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--amp', default='none',
                        choices=['none', 'bf16', 'fp16'])
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--rounds', type=int, default=2,
                        help='alternating fused / reference subprocesses')
    parser.add_argument('--inputs', nargs='+', default=list(INPUTS),
                        choices=list(INPUTS))
    parser.add_argument('--modes', nargs='+', default=['infer', 'fwd+bwd'],
                        choices=['infer', 'fwd+bwd'])
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child is not None:
        name, mode, method, what = json.loads(args.child)
        print(json.dumps(measure(args, INPUTS[name], mode, method, what)))
        return

    from mmvitmix.ops import _dispatch
    if not _dispatch.load_ext():
        sys.exit(f'mmvitmix._ext is not built: {_dispatch.ext_error()}')
    print(f'# RMT-{args.arch} backbone; device: {device_name(args.device)}; '
          f'torch '
          f'{torch.__version__}; batch {args.batch}; amp {args.amp}; '
          f'threads {args.threads}; {args.rounds} rounds x {args.repeats} '
          f'timed runs after {args.warmup} warm-up; seconds as median '
          '(min)')
    print('| input | mode | fused s | fused MiB | reference s | '
          'reference MiB | speedup median (min) |')
    print('|---|---|---|---|---|---|---|')
    base_cmd = [
        sys.executable, __file__, '--device', args.device, '--arch',
        args.arch, '--batch', str(args.batch), '--amp', args.amp, '--threads',
        str(args.threads), '--warmup', str(args.warmup), '--repeats',
        str(args.repeats)
    ]

    methods = ('fused', 'reference')
    for name in args.inputs:
        for mode in args.modes:
            times = {m: [] for m in methods}
            for _ in range(args.rounds):
                for method in methods:
                    res = run_child(base_cmd, [name, mode, method, 'time'],
                                    'time')
                    if res is not None:
                        times[method] += res
            cells = []
            for method in methods:
                mem = run_child(base_cmd, [name, mode, method, 'memory'],
                                'memory')
                cells += [time_cell(times[method], 3), memory_cell(mem)]
            speed = speedup_cell(times['reference'], times['fused'])
            print(f'| {name} | {mode} | ' + ' | '.join(cells) +
                  f' | {speed} |', flush=True)


if __name__ == '__main__':
    main()
