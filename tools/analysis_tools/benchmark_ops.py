"""Benchmark the attention backends of both seams, op by op.

RMT-S retention layers and ResT-Small EMSA layers at the stage grids of a
512×512 segmentation input and a 800×1333 detection input (batch 1 unless
``--batch``), each called as the backbone calls its seam
(``retention_attention`` with the q/k/v projections, the key scale and the
rotary tables; ``emsa_attention`` with the head-mixing weights), once per
backend (``--methods``: ``auto``, ``sdpa``, ``flex``, ``fused``,
``reference``, set through ``MMVITMIX_ATTN_BACKEND``; by default every one
that runs on the device, ``fused`` on CUDA only), forward only and
forward + backward. FlexAttention runs only where torch supports it (no
CPU backward) and not for EMSA (no head mixing in a ``score_mod``). Each
method runs in fresh subprocesses, the methods alternating for
``--rounds`` rounds of ``--warmup`` + ``--repeats`` runs; reported are the
median and the minimum wall time over all timed runs, the fastest backend
by median and auto's median over that one (the table ``auto`` follows is
:data:`mmvitmix.ops.backends.AUTO_TABLE`), and with ``--memory`` the peak
extra memory of one run (CUDA: ``torch.cuda.max_memory_allocated``; CPU:
the process' peak resident memory above its level before the run, in a
separate subprocess in which glibc returns large blocks to the OS).

Examples::

    python tools/analysis_tools/benchmark_ops.py --device cpu --threads 2
    python tools/analysis_tools/benchmark_ops.py --device cuda --dtype bf16
"""
import argparse
import json
import os
import statistics
import sys

import torch

from mmvitmix.utils.bench import (device_name, measure_step, memory_cell,
                                  run_child, time_cell)
from mmvitmix.apis import cli
from mmvitmix.apis.cli import ToolError, run

# stage: (heads, head_dim, decomposed) of RMT-S
RMT_S_STAGES = {'stage1': (4, 16, True), 'stage2': (4, 32, True),
                'stage3': (8, 32, True), 'stage4': (16, 32, False)}
# stage: (heads, head_dim, sr_ratio) of ResT-Small (stage 1: one head, so
# plain attention; stages 2-4 mix heads)
REST_S_STAGES = {'stage1': (1, 64, 8), 'stage2': (2, 64, 4),
                 'stage3': (4, 64, 2), 'stage4': (8, 64, 1)}
METHODS = ('auto', 'sdpa', 'flex', 'fused', 'reference')
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


def emsa_inputs(batch, stage, grid, device, dtype, requires_grad):
    """One ResT-Small EMSA layer's q, k, v, head-mixing weight and bias."""
    heads, dim, sr = REST_S_STAGES[stage]
    height, width = grid
    n = height * width
    m = (((height + 2 * (sr // 2) - (sr + 1)) // sr + 1) *
         ((width + 2 * (sr // 2) - (sr + 1)) // sr + 1)) if sr > 1 else n
    gen = torch.Generator().manual_seed(0)

    def make(shape):
        x = torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)
        return x.transpose(1, 2).requires_grad_(requires_grad)

    q, k, v = make((batch, n, heads, dim)), make((batch, m, heads, dim)), \
        make((batch, m, heads, dim))
    weight = (torch.randn(heads, heads, generator=gen) * heads**-0.5).to(
        device=device, dtype=dtype) if heads > 1 else None
    bias = torch.zeros(heads, device=device, dtype=dtype) if heads > 1 \
        else None
    return q, k, v, weight, bias


def measure(method, case, args, what):
    """Wall times (ms) of the timed runs, or the peak extra memory (MiB)."""
    op, stage, grid, mode = case
    os.environ['MMVITMIX_ATTN_BACKEND'] = method
    train = mode == 'fwd+bwd'
    dtype = DTYPES[args.dtype]
    if op == 'retention':
        from mmvitmix.ops.retention import retention_attention
        heads, dim, decomposed = RMT_S_STAGES[stage]
        q, k, v, log_decay, sin, cos = make_inputs(args.batch, heads, dim,
                                                   grid, args.device, dtype,
                                                   train)

        def call():
            return retention_attention(q, k, v, log_decay, decomposed, sin,
                                       cos, dim**-0.5)
    else:
        from mmvitmix.ops.emsa import emsa_attention
        q, k, v, weight, bias = emsa_inputs(args.batch, stage, grid,
                                            args.device, dtype, train)

        def call():
            return emsa_attention(q, k, v, q.shape[-1]**-0.5, weight, bias)

    def step():
        if train:
            out = call()
            out.backward(torch.ones_like(out))
            for t in (q, k, v):
                t.grad = None
        else:
            with torch.no_grad():
                call()

    return measure_step(step, args.device, args.warmup, args.repeats, what,
                        unit=1e3)


def check_args(args):
    """Refuse what cannot be measured before any process starts."""
    cli.timing_args(args)
    if args.methods is None:
        args.methods = [m for m in METHODS
                        if m != 'fused' or args.device == 'cuda']
    if 'fused' in args.methods and args.device == 'cpu':
        raise ToolError("--methods fused: the fused kernels run on CUDA "
                        "only; on the CPU choose from "
                        f"{[m for m in METHODS if m != 'fused']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda'
                        if torch.cuda.is_available() else 'cpu',
                        choices=['cpu', 'cuda'])
    parser.add_argument('--ops', nargs='+', default=['retention', 'emsa'],
                        choices=['retention', 'emsa'])
    parser.add_argument('--methods', nargs='+', default=None,
                        choices=list(METHODS),
                        help='default: every backend that runs on the '
                        'device (fused: CUDA only)')
    parser.add_argument('--dtype', default='fp32', choices=list(DTYPES))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--rounds', type=int, default=2,
                        help='alternating subprocesses per method')
    parser.add_argument('--inputs', nargs='+', default=list(INPUTS),
                        choices=list(INPUTS))
    parser.add_argument('--stages', nargs='+', default=list(RMT_S_STAGES),
                        choices=list(RMT_S_STAGES))
    parser.add_argument('--modes', nargs='+', default=['fwd', 'fwd+bwd'],
                        choices=['fwd', 'fwd+bwd'])
    parser.add_argument('--memory', action='store_true',
                        help='also measure peak memory (one more run each)')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_args(args)
    torch.set_num_threads(args.threads)
    if args.child is not None:
        method, case, what = json.loads(args.child)
        case[2] = tuple(case[2])
        print(json.dumps(measure(method, case, args, what)))
        return

    print(f'# device: {device_name(args.device)}; torch {torch.__version__}; '
          f'dtype {args.dtype}; batch {args.batch}; threads {args.threads}; '
          f'{args.rounds} rounds x {args.repeats} timed runs after '
          f'{args.warmup} warm-up; ms as median (min); best = fastest median')
    header = ['op', 'input', 'stage', 'grid', 'mode']
    for m in args.methods:
        header += [f'{m} ms'] + ([f'{m} MiB'] if args.memory else [])
    header += ['best', 'auto / best']
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    base_cmd = [
        sys.executable, __file__, '--device', args.device, '--dtype',
        args.dtype, '--batch', str(args.batch), '--threads',
        str(args.threads), '--warmup', str(args.warmup), '--repeats',
        str(args.repeats)
    ]

    for op in args.ops:
        for name in args.inputs:
            grids = dict(zip(RMT_S_STAGES, stage_grids(*INPUTS[name])))
            for stage in args.stages:
                grid = grids[stage]
                for mode in args.modes:
                    methods = [
                        m for m in args.methods if
                        not (m == 'flex' and (op == 'emsa' or (
                            mode == 'fwd+bwd' and args.device == 'cpu')))
                    ]
                    case = [op, stage, list(grid), mode]
                    times = {m: [] for m in methods}
                    for _ in range(args.rounds):
                        for method in methods:
                            res = run_child(base_cmd, [method, case, 'time'],
                                            'time')
                            if res is not None:
                                times[method] += res
                    row = [op, name, stage, f'{grid[0]}x{grid[1]}', mode]
                    for method in args.methods:
                        row.append(time_cell(times[method], 1)
                                   if method in methods else 'n/a')
                        if args.memory:
                            mem = (run_child(base_cmd,
                                             [method, case, 'memory'],
                                             'memory')
                                   if method in methods else None)
                            row.append(memory_cell(mem))
                    medians = {
                        m: statistics.median(t)
                        for m, t in times.items() if t and m != 'auto'
                    }
                    best = min(medians, key=medians.get) if medians else '-'
                    row.append(best)
                    row.append(f"{statistics.median(times['auto']) / medians[best]:.2f}"
                               if 'auto' in times and times['auto']
                               and medians else '-')
                    print('| ' + ' | '.join(row) + ' |', flush=True)


if __name__ == '__main__':
    run(main)
