"""Benchmark the fused attention ops against the PyTorch reference.

RMT-S retention layers at the stage grids of a 800×1333 detection input
and a 512×512 segmentation input (batch 1 unless ``--batch``): decomposed
ReSA (W pass + H pass) in stages 1-3, whole ReSA in stage 4, each as the
backbone calls ``retention_attention``: the q/k/v projections with the key
scale and the rotary tables (the reference rotates in PyTorch, the fused CPU
kernel while it gathers q and k). Each case runs
the fused op and the reference side by side (and, on CUDA,
``torch.nn.attention.flex_attention`` with the same decay bias as a
``score_mod``), forward only and forward + backward. Each method runs in
fresh subprocesses, the methods alternating for ``--rounds`` rounds of
``--warmup`` + ``--repeats`` runs; reported are the median and the minimum
wall time over all timed runs (on a shared machine the minimum is the less
disturbed figure) and the peak extra memory of one run (CUDA:
``torch.cuda.max_memory_allocated``; CPU: the process' peak resident memory
above its level before the run, measured in a separate subprocess in which
glibc returns large blocks to the OS, which would distort timings).

Examples::

    python tools/analysis_tools/benchmark_ops.py --device cpu --threads 2
    python tools/analysis_tools/benchmark_ops.py --device cuda --dtype bf16
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

# (name, heads, head_dim, decomposed) per RMT-S stage
RMT_S_STAGES = [('stage1', 4, 16, True), ('stage2', 4, 32, True),
                ('stage3', 8, 32, True), ('stage4', 16, 32, False)]
INPUTS = {'det800x1333': (800, 1333), 'seg512': (512, 512)}
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def stage_grids(height, width):
    """Token grids of RMT's four stages (stem /4, then /2 per stage)."""

    def down(x):  # 3×3 conv, stride 2, padding 1
        return (x - 1) // 2 + 1

    h, w = down(down(height)), down(down(width))
    grids = [(h, w)]
    for _ in range(3):
        h, w = down(h), down(w)
        grids.append((h, w))
    return grids


def make_inputs(batch, heads, dim, grid, device, dtype, requires_grad):
    """A retention layer's inputs as RMT-S's backbone passes them.

    q, k, v: the projections in the backbone's layout, (B, H, W, heads, D)
    permuted to (B, heads, H, W, D); log_decay and the rotary sin/cos tables
    from the backbone's own ``RetentionRelPos``.
    """
    from mmvitmix.models.backbones.rmt import RetentionRelPos
    height, width = grid
    gen = torch.Generator().manual_seed(0)

    def proj():
        x = torch.randn(batch, height, width, heads, dim, generator=gen)
        x = x.to(device=device, dtype=dtype)
        return x.permute(0, 3, 1, 2, 4).requires_grad_(requires_grad)

    rel_pos = RetentionRelPos(heads * dim, heads, 2, 4).to(device)
    sin, cos = rel_pos(height, width, dtype)
    return proj(), proj(), proj(), rel_pos.log_decay, sin, cos


def flex_retention(q, k, v, log_decay, decomposed, sin, cos, scale):
    """The same layer with flex_attention and the decay as a score_mod.

    The rotary shift and the key scale run in PyTorch before it, as in the
    reference path.
    """
    from torch.nn.attention.flex_attention import flex_attention

    from mmvitmix.ops.retention import theta_shift
    global _FLEX
    if '_FLEX' not in globals():
        _FLEX = torch.compile(flex_attention, dynamic=False)
    bsz, heads, height, width, dim = q.shape
    q = theta_shift(q, sin, cos)
    k = theta_shift(k * scale, sin, cos)

    def run(q4, k4, v4, row):

        def score_mod(score, b, h, q_idx, kv_idx):
            if row == 0:
                dist = (q_idx - kv_idx).abs()
            else:
                dist = ((q_idx // row - kv_idx // row).abs() +
                        (q_idx % row - kv_idx % row).abs())
            return score + log_decay[h] * dist

        return _FLEX(q4, k4, v4, score_mod=score_mod, scale=1.0)

    if not decomposed:
        flat = [t.reshape(bsz, heads, height * width, -1) for t in (q, k, v)]
        return run(*flat, width).reshape(bsz, heads, height, width, -1)

    def seqs(t, along_w):
        if along_w:  # (B·H, heads, W, D)
            return t.transpose(1, 2).reshape(bsz * height, heads, width, -1)
        return t.permute(0, 3, 1, 2, 4).reshape(bsz * width, heads, height,
                                                -1)

    out_w = run(seqs(q, True), seqs(k, True), seqs(v, True), 0)
    out_w = out_w.reshape(bsz, height, heads, width, -1).transpose(1, 2)
    out = run(seqs(q, False), seqs(k, False), seqs(out_w, False), 0)
    return out.reshape(bsz, width, heads, height, -1).permute(0, 2, 3, 1, 4)


def layer_fn(method):
    from mmvitmix.ops import _dispatch
    from mmvitmix.ops.retention import retention_attention
    if method == 'flex':
        return flex_retention
    if method == 'fused' and not _dispatch.load_ext():
        sys.exit(f'mmvitmix._ext is not built: {_dispatch.ext_error()}')
    os.environ['MMVITMIX_FORCE_REFERENCE'] = '1' if method == 'reference' \
        else '0'
    return retention_attention


def measure(method, case, args, what):
    """Wall times (ms) of the timed runs, or the peak extra memory (MiB)."""
    stage, heads, dim, decomposed, grid, mode = case
    fn = layer_fn(method)
    train = mode == 'fwd+bwd'
    q, k, v, log_decay, sin, cos = make_inputs(args.batch, heads, dim, grid,
                                               args.device,
                                               DTYPES[args.dtype], train)
    scale = dim**-0.5

    def step():
        if train:
            out = fn(q, k, v, log_decay, decomposed, sin, cos, scale)
            out.backward(torch.ones_like(out))
            for t in (q, k, v):
                t.grad = None
        else:
            with torch.no_grad():
                fn(q, k, v, log_decay, decomposed, sin, cos, scale)

    return measure_step(step, args.device, args.warmup, args.repeats, what,
                        unit=1e3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda'
                        if torch.cuda.is_available() else 'cpu',
                        choices=['cpu', 'cuda'])
    parser.add_argument('--dtype', default='fp32', choices=list(DTYPES))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--rounds', type=int, default=2,
                        help='alternating subprocesses per method')
    parser.add_argument('--inputs', nargs='+', default=list(INPUTS),
                        choices=list(INPUTS))
    parser.add_argument('--modes', nargs='+', default=['fwd', 'fwd+bwd'],
                        choices=['fwd', 'fwd+bwd'])
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child is not None:
        method, case, what = json.loads(args.child)
        case[4] = tuple(case[4])
        print(json.dumps(measure(method, case, args, what)))
        return

    methods = ['fused', 'reference'] + (['flex']
                                        if args.device == 'cuda' else [])
    from mmvitmix.ops import _dispatch
    if not _dispatch.load_ext():
        sys.exit(f'mmvitmix._ext is not built: {_dispatch.ext_error()}')
    print(f'# device: {device_name(args.device)}; torch {torch.__version__}; dtype '
          f'{args.dtype}; batch {args.batch}; threads {args.threads}; '
          f'{args.rounds} rounds x {args.repeats} timed runs after '
          f'{args.warmup} warm-up; ms as median (min)')
    header = ['input', 'stage', 'grid', 'mode']
    for m in methods:
        header += [f'{m} ms', f'{m} MiB']
    header.append('speedup median (min)')
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    base_cmd = [
        sys.executable, __file__, '--device', args.device, '--dtype',
        args.dtype, '--batch', str(args.batch), '--threads',
        str(args.threads), '--warmup', str(args.warmup), '--repeats',
        str(args.repeats)
    ]

    for name in args.inputs:
        grids = stage_grids(*INPUTS[name])
        for (stage, heads, dim, decomposed), grid in zip(RMT_S_STAGES, grids):
            for mode in args.modes:
                case = [stage, heads, dim, decomposed, list(grid), mode]
                times = {m: [] for m in methods}
                for _ in range(args.rounds):
                    for method in methods:
                        res = run_child(base_cmd, [method, case, 'time'],
                                        'time')
                        if res is not None:
                            times[method] += res
                row = [name, stage, f'{grid[0]}x{grid[1]}', mode]
                for method in methods:
                    mem = run_child(base_cmd, [method, case, 'memory'],
                                    'memory')
                    row += [time_cell(times[method], 1), memory_cell(mem)]
                row.append(speedup_cell(times['reference'], times['fused']))
                print('| ' + ' | '.join(row) + ' |', flush=True)


if __name__ == '__main__':
    main()
