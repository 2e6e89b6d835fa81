"""GPU acceptance of the attention backends, in one call.

On a bare GPU machine (torch >= 2.11 with CUDA, nvcc; no OpenMMLab
packages, no network) this:

1. installs carried wheels (``--wheels DIR``: mmengine, a pure-Python mmcv
   and their pure-Python dependencies, for the backbone part; see below);
2. builds ``mmvitmix._ext`` in place for the GPU it finds
   (``TORCH_CUDA_ARCH_LIST`` = its compute capability), unless
   ``--no-build``;
3. checks every backend of both seams against the float64 reference,
   forward and backward, fp32 / fp16 / bf16, at RMT and ResT shapes
   (relative error ‖out − ref‖ / ‖ref‖; limits in :data:`LIMITS`);
4. times forward and forward + backward of the ops (RMT-S stage layers,
   ResT-S EMSA layers) and of the RMT-S backbone at 800×1333, batch 2,
   for every backend (and the official RMT when ``--official-dir`` is
   given), with peak memory;
5. writes ``acceptance.md`` (one markdown table per part) and
   ``acceptance.json`` into ``--out-dir`` and exits non-zero when any
   correctness check failed or a part could not run.

It also runs on CPU (``--device cpu --quick``: tiny shapes, no build, no
FlexAttention compile), which the test suite does so that it cannot rot.

Preparing the wheels on a machine with the project installed (once)::

    mkdir -p .whl && cd .whl
    pip download --no-deps mmengine==0.10.7 addict yapf termcolor \\
        platformdirs tomli rich markdown-it-py mdurl pygments
    MMCV_WITH_OPS=0 pip wheel --no-deps --no-build-isolation mmcv==2.1.0

(``opencv-python-headless`` for the device's Python is needed by mmcv's
import: ``pip download --no-deps --only-binary=:all: --python-version 3.12
opencv-python-headless numpy``), then on the GPU machine, from the
repository root (mmvitmix is not installed there)::

    PYTHONPATH=. python tools/analysis_tools/gpu_acceptance.py \\
        --wheels .whl --out-dir $OUT

The checks and the timing are the project's own: :mod:`mmvitmix.testing`
(the float64 oracle the test suite uses) and :mod:`mmvitmix.utils.bench`
(the benchmark tools' timing).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from mmvitmix.testing import emsa_error, emsa_inputs, retention_error, \
    rmt_inputs
from mmvitmix.utils.bench import backbone_step, device_name, \
    load_official_models, measure_step
from mmvitmix.apis import cli
from mmvitmix.apis.cli import ToolError, run

ROOT = Path(__file__).resolve().parents[2]

#: largest relative error (‖out − ref‖ / ‖ref‖ against float64) per dtype
LIMITS = {'fp32': 1e-3, 'bf16': 2e-2, 'fp16': 5e-3}
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16,
          'fp16': torch.float16}
#: the backends checked and timed (``auto`` is always timed as well)
BACKENDS = ('sdpa', 'flex', 'fused', 'reference')


def log(*args):
    print('[gpu_acceptance]', *args, flush=True)


def install_wheels(folder):
    pkgs = sorted(str(p) for p in Path(folder).glob('*.whl'))
    if not pkgs:
        return f'no wheels in {folder}'
    cmd = [sys.executable, '-m', 'pip', 'install', '--no-index',
           '--no-deps', '--find-links', folder] + pkgs
    res = subprocess.run(cmd, capture_output=True, text=True)
    return None if res.returncode == 0 else res.stderr[-2000:]


def build_extension(device):
    """``python setup.py build_ext --inplace`` for this GPU."""
    env = dict(os.environ, FORCE_CUDA='1',
               MAX_JOBS=str(max(1, (os.cpu_count() or 2))))
    if device == 'cuda':
        major, minor = torch.cuda.get_device_capability()
        env['TORCH_CUDA_ARCH_LIST'] = f'{major}.{minor}'
    start = time.perf_counter()
    res = subprocess.run([sys.executable, 'setup.py', 'build_ext',
                          '--inplace'], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    took = time.perf_counter() - start
    if res.returncode != 0:
        return took, (res.stdout + res.stderr)[-3000:]
    return took, None


# ----------------------------------------------------------- correctness


def correctness(args, backends_to_check):
    rows = []
    dtypes = ['fp32', 'bf16', 'fp16']
    if args.quick:
        shapes = [(2, 2, 5, 7, 16, 16)]
    else:
        shapes = [(2, 4, 13, 21, 16, 16), (1, 8, 25, 42, 32, 32),
                  (2, 2, 9, 1, 64, 64)]
    for backend in backends_to_check:
        for dtype in dtypes:
            for decomposed in (True, False):
                for shape in shapes:
                    for train in (False, True):
                        if backend == 'flex' and train and args.device == \
                                'cpu':
                            continue
                        row = dict(op='retention', backend=backend,
                                   dtype=dtype, form='decomposed'
                                   if decomposed else 'whole',
                                   shape=list(shape),
                                   mode='fwd+bwd' if train else 'fwd')
                        try:
                            err = retention_error(
                                backend, shape, DTYPES[dtype], decomposed,
                                train, seed=len(rows), device=args.device)
                            row.update(err=err, ok=err <= LIMITS[dtype])
                        except Exception as exc:  # reported, not hidden
                            row.update(err=None, ok=False,
                                       error=f'{type(exc).__name__}: {exc}'
                                       [:300])
                        rows.append(row)
        if backend == 'flex':
            continue
        for dtype in dtypes:
            for mixed in (True, False):
                for train in (False, True):
                    row = dict(op='emsa', backend=backend, dtype=dtype,
                               form='mixed' if mixed else 'plain',
                               shape=[2, 4 if mixed else 1, 197, 49, 64],
                               mode='fwd+bwd' if train else 'fwd')
                    try:
                        err = emsa_error(backend, mixed, DTYPES[dtype],
                                         train, seed=len(rows),
                                         device=args.device)
                        row.update(err=err, ok=err <= LIMITS[dtype])
                    except Exception as exc:
                        row.update(err=None, ok=False,
                                   error=f'{type(exc).__name__}: {exc}'
                                   [:300])
                    rows.append(row)
    return rows


# ---------------------------------------------------------------- timing


def time_ops(args, methods):
    from mmvitmix.ops.emsa import emsa_attention
    from mmvitmix.ops.retention import retention_attention
    rows = []
    if args.quick:
        rmt = [('stage1', 4, 16, True, (9, 11))]
        rest = [('stage2', 2, 32, 64, 16)]
        batch = 1
    else:  # RMT-S / ResT-S stages at 800x1333, batch 2
        rmt = [('stage1', 4, 16, True, (200, 334)),
               ('stage2', 4, 32, True, (100, 167)),
               ('stage3', 8, 32, True, (50, 84)),
               ('stage4', 16, 32, False, (25, 42))]
        rest = [('stage1', 1, 64, 200 * 334, 25 * 42),
                ('stage2', 2, 64, 100 * 167, 25 * 42),
                ('stage3', 4, 64, 50 * 84, 25 * 42),
                ('stage4', 8, 64, 25 * 42, 25 * 42)]
        batch = 2
    dtype = DTYPES[args.time_dtype]
    for stage, heads, dim, decomposed, (h, w) in rmt:
        q, k, v, log_decay, sin, cos = rmt_inputs(
            (batch, heads, h, w, dim, dim), dtype, device=args.device)
        grad = torch.randn_like(v)
        for mode in ('fwd', 'fwd+bwd'):
            for method in methods:
                if method == 'flex' and mode == 'fwd+bwd' and \
                        args.device == 'cpu':
                    continue
                leaves = [t.detach().requires_grad_(mode == 'fwd+bwd')
                          for t in (q, k, v)]

                def step():
                    with torch.set_grad_enabled(mode == 'fwd+bwd'):
                        out = retention_attention(
                            *leaves, log_decay, decomposed, sin, cos,
                            dim**-0.5, backend=method)
                        if mode == 'fwd+bwd':
                            torch.autograd.grad(out, leaves, grad)

                rows.append(_timed_row('retention', stage, (h, w), mode,
                                       method, step, args))
    for stage, heads, dim, n, m in rest:
        q, k, v, weight, bias = emsa_inputs(heads > 1, dtype, heads,
                                            size=(batch, n, m, dim),
                                            device=args.device)
        if heads > 1:
            weight, bias = (weight / heads).to(dtype), bias.to(dtype)
        for mode in ('fwd', 'fwd+bwd'):
            for method in methods:
                if method == 'flex':
                    continue
                leaves = [t.detach().requires_grad_(mode == 'fwd+bwd')
                          for t in (q, k, v)]

                def step():
                    with torch.set_grad_enabled(mode == 'fwd+bwd'):
                        out = emsa_attention(*leaves, dim**-0.5, weight,
                                             bias, backend=method)
                        if mode == 'fwd+bwd':
                            out.sum().backward()

                rows.append(_timed_row('emsa', stage, (n, m), mode, method,
                                       step, args))
    return rows


def _timed_row(op, stage, shape, mode, method, step, args):
    row = dict(op=op, stage=stage, shape=list(shape), mode=mode,
               method=method)
    if time.perf_counter() > args.deadline:
        row.update(error='skipped: time budget spent')
        return row
    try:
        times = measure_step(step, args.device, args.warmup, args.repeats,
                             'time', unit=1e3)
        peak = (measure_step(step, args.device, 0, 1, 'memory')
                if args.device == 'cuda' else None)
        row.update(median_ms=statistics.median(times), min_ms=min(times),
                   peak_mib=peak)
    except Exception as exc:
        row.update(error=f'{type(exc).__name__}: {exc}'[:300])
    if args.device == 'cuda':
        torch.cuda.empty_cache()
    return row


def time_backbone(args, methods):
    from mmvitmix.models.backbones.rmt import RMT, convert_rmt
    arch, size, batch = (('t', (64, 96), 1) if args.quick else
                         ('s', (800, 1333), 2))
    rows = []
    official = None
    if args.official_dir and not args.quick:
        om = load_official_models(args.official_loader)
        mod = om.load_rmt_cls(os.path.join(args.official_dir, 'RMT.py'))
        official = mod.RMT_S(None) if 'args' in \
            mod.RMT_S.__code__.co_varnames else mod.RMT_S()
    for method in (['official'] if official is not None else []) + methods:
        for mode in ('infer', 'fwd+bwd'):
            if method == 'flex' and mode == 'fwd+bwd' and \
                    args.device == 'cpu':
                continue
            torch.manual_seed(0)
            if method == 'official':
                model = official
                fn = model.forward_features
            else:
                model = RMT(arch=arch, drop_path_rate=0., attn_backend=method)
                if official is not None:
                    model.load_state_dict(
                        convert_rmt({'model': official.state_dict()}),
                        strict=False)
                fn = model
            model = model.to(args.device).train(mode == 'fwd+bwd')
            x = torch.randn(batch, 3, *size, device=args.device)

            def step(model=model, fn=fn, x=x):
                backbone_step(model, fn, x, mode == 'fwd+bwd')

            row = _timed_row('backbone', f'RMT-{arch.upper()}',
                             (batch, 3) + size, mode, method, step, args)
            rows.append(row)
            model.to('cpu')
    return rows


# ---------------------------------------------------------------- output


def markdown(report):
    lines = [f"# GPU acceptance: {report['device_name']}", '',
             f"torch {report['torch']}, CUDA {report['cuda']}, python "
             f"{report['python']}, {report['date']}; build: "
             f"{report['build']}", '']
    lines += ['## Correctness (relative error vs float64 reference)', '',
              '| op | backend | dtype | form | mode | shape | rel. err | '
              'limit | ok |', '|---|---|---|---|---|---|---|---|---|']
    for r in report['correctness']:
        err = (f"{r['err']:.2e}" if r.get('err') is not None else
               r.get('error', '-'))
        lines.append(f"| {r['op']} | {r['backend']} | {r['dtype']} | "
                     f"{r['form']} | {r['mode']} | {r['shape']} | {err} | "
                     f"{LIMITS[r['dtype']]:.0e} | {'yes' if r['ok'] else 'NO'} |")
    for part in ('ops', 'backbone'):
        lines += ['', f'## Timing: {part} ({report["time_dtype"]}, median '
                  '(min) ms, peak extra MiB)', '',
                  '| op | stage | shape | mode | method | ms | MiB |',
                  '|---|---|---|---|---|---|---|']
        for r in report[part]:
            if 'median_ms' in r:
                ms = f"{r['median_ms']:.2f} ({r['min_ms']:.2f})"
                mib = (f"{r['peak_mib']:.0f}" if r['peak_mib'] is not None
                       else '-')
            else:
                ms, mib = r.get('error', '-'), '-'
            lines.append(f"| {r['op']} | {r['stage']} | {r['shape']} | "
                         f"{r['mode']} | {r['method']} | {ms} | {mib} |")
    lines += ['', f"Result: {'PASS' if report['passed'] else 'FAIL'}; "
              f"{report['elapsed_s']:.0f} s in all.", '']
    if report['problems']:
        lines += ['Problems:', ''] + [f'- {p}' for p in report['problems']]
    return '\n'.join(lines) + '\n'


def check_args(args):
    """Refuse what cannot run before anything is installed or built."""
    cli.device('--device', args.device)
    cli.count('--warmup', args.warmup, 0)
    cli.count('--repeats', args.repeats)
    if not args.budget_s > 0:
        raise ToolError(f'--budget-s {args.budget_s}: give a number of '
                        'seconds > 0')
    out = cli.output_dir('--out-dir', args.out_dir)
    for name in ('acceptance.json', 'acceptance.md'):
        cli.output_file('--out-dir', out / name)
    if args.wheels:
        cli.existing_dir('--wheels', args.wheels)
    if args.official_dir:
        cli.existing_dir('--official-dir', args.official_dir, ['RMT.py'])
        if not args.quick:
            cli.existing_dir('--official-loader', args.official_loader,
                             ['official_models.py'])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda'
                        if torch.cuda.is_available() else 'cpu',
                        choices=['cpu', 'cuda'])
    parser.add_argument('--quick', action='store_true',
                        help='tiny shapes (the test suite runs this on CPU)')
    parser.add_argument('--out-dir', default='work_dirs/gpu_acceptance')
    parser.add_argument('--wheels', help='folder of wheels to install first')
    parser.add_argument('--no-build', action='store_true',
                        help='use the extension as it is')
    parser.add_argument('--official-dir',
                        help='folder with the official RMT.py')
    parser.add_argument('--official-loader',
                        default=str(ROOT.parent / 'shared' / 'bench'))
    parser.add_argument('--backends', nargs='+', default=list(BACKENDS),
                        choices=list(BACKENDS))
    parser.add_argument('--time-dtype', default='fp32', choices=list(DTYPES))
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--budget-s', type=float, default=420.,
                        help='stop timing after this many seconds')
    args = parser.parse_args(argv)
    check_args(args)
    start = time.perf_counter()
    args.deadline = start + args.budget_s
    if args.device == 'cpu':  # the fused kernels run on CUDA GPUs only
        args.backends = [b for b in args.backends if b != 'fused']
    if args.quick:
        args.warmup, args.repeats = 1, 2
        if args.device == 'cpu':  # no inductor compile in the test suite
            args.backends = [b for b in args.backends if b != 'flex']
    problems = []
    if args.wheels:
        err = install_wheels(args.wheels)
        if err:
            problems.append(f'installing wheels failed: {err}')
    build = 'not built (--no-build)'
    if not args.no_build and args.device == 'cuda':
        took, err = build_extension(args.device)
        build = (f'built in place for {torch.cuda.get_device_capability()} '
                 f'in {took:.0f} s') if err is None else 'FAILED'
        if err:
            problems.append(f'building the extension failed: {err}')
    from mmvitmix.ops import extension
    if not extension.load_ext():
        problems.append(f'mmvitmix._ext did not load: {extension.ext_error()}')
    log('build:', build)

    rows = correctness(args, args.backends)
    bad = [r for r in rows if not r['ok']]
    log(f'correctness: {len(rows) - len(bad)}/{len(rows)} within limits')
    methods = ['auto'] + args.backends
    ops_rows = time_ops(args, methods)
    try:
        backbone_rows = time_backbone(args, methods)
    except ImportError as exc:
        backbone_rows = []
        problems.append(f'backbone part needs mmengine/mmcv ({exc}); carry '
                        'them with --wheels')
    failed_timing = [r for r in ops_rows + backbone_rows
                     if 'error' in r and 'budget' not in r['error']]
    problems += [f"{r['op']} {r['stage']} {r['mode']} {r['method']}: "
                 f"{r['error']}" for r in failed_timing]
    problems += [f"correctness {r['op']} {r['backend']} {r['dtype']} "
                 f"{r['form']} {r['mode']}: "
                 f"{r.get('error') or r['err']}" for r in bad]
    report = dict(
        device=args.device,
        device_name=device_name(args.device),
        torch=torch.__version__, cuda=torch.version.cuda,
        python=platform.python_version(),
        date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
        build=build, ext_cuda_archs=extension.ext_cuda_archs(),
        time_dtype=args.time_dtype, correctness=rows, ops=ops_rows,
        backbone=backbone_rows, problems=problems,
        passed=not problems, elapsed_s=time.perf_counter() - start)
    out = Path(args.out_dir)
    text = markdown(report)
    cli.write_file(out / 'acceptance.json', json.dumps(report, indent=1))
    cli.write_file(out / 'acceptance.md', text)
    print(text)
    return 0 if report['passed'] else 1


if __name__ == '__main__':
    run(main)
