"""What the benchmark tools of ``tools/analysis_tools`` share.

Timing and peak-memory measurement of one step function, the fresh
subprocess each measurement runs in, the table cells, and the loader of the
official implementations the benchmarks compare with.
"""
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import torch


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or 'CPU'


def device_name(device):
    return torch.cuda.get_device_name() if device == 'cuda' else cpu_name()


def _read_status(key):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def measure_step(step, device, warmup, repeats, what, unit=1.0):
    """Wall times of ``repeats`` timed runs (seconds × ``unit``) after
    ``warmup`` runs, or (``what='memory'``) the peak extra memory of one run
    in MiB (CUDA: ``max_memory_allocated``; CPU: peak resident set above
    the level before the run)."""

    def sync():
        if device == 'cuda':
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    if what == 'memory':
        if device == 'cuda':
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step()
            sync()
            peak = torch.cuda.max_memory_allocated() - base
        else:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')  # reset the peak resident set
            base = _read_status('VmRSS')
            step()
            peak = _read_status('VmHWM') - base
        return peak / 2**20
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - start) * unit)
    return times


def run_child(base_cmd, payload, what):
    """Run ``base_cmd --child json(payload)`` in a fresh process.

    The memory run lets glibc return large blocks to the OS, so that the
    resident set follows what is allocated (a setting that would distort
    timings). Returns the child's JSON answer, or None (reason on stderr).
    """
    env = dict(os.environ)
    if what == 'memory':
        env['MALLOC_MMAP_THRESHOLD_'] = '65536'
    out = subprocess.run(
        base_cmd + ['--child', json.dumps(payload)],
        env=env,
        capture_output=True,
        text=True)
    if out.returncode != 0:
        print(f'# {payload} failed: {out.stderr[-800:]}', file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_cell(times, digits):
    if not times:
        return 'failed'
    return (f'{statistics.median(times):.{digits}f} '
            f'({min(times):.{digits}f})')


def memory_cell(mib):
    return f'{mib:.0f}' if mib is not None else '-'


def speedup_cell(ref_times, fused_times):
    """Reference over fused time, by the median (and by the minimum)."""
    if not ref_times or not fused_times:
        return '-'
    by_median = statistics.median(ref_times) / statistics.median(fused_times)
    by_min = min(ref_times) / min(fused_times)
    return f'{by_median:.2f}x ({by_min:.2f}x)'


def load_official_models(folder):
    """The ``official_models`` module of ``folder`` (the loader of the
    official implementations, given with ``--official-loader``), imported
    from its file."""
    path = os.path.join(os.path.abspath(folder), 'official_models.py')
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'--official-loader {folder!r}: no official_models.py there')
    spec = importlib.util.spec_from_file_location('official_models', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault('official_models', module)
    spec.loader.exec_module(module)
    return module


#: benchmark name -> (mmvitmix type, arch, official source file, official
#: constructor); the last two None where no official code is compared
BACKBONE_MODELS = {
    'rmt_t': ('RMT', 't', 'RMT.py', 'RMT_T3'),
    'rmt_s': ('RMT', 's', 'RMT.py', 'RMT_S'),
    'rmt_b': ('RMT', 'b', 'RMT.py', 'RMT_M2'),
    'rmt_l': ('RMT', 'l', 'RMT.py', 'RMT_L6'),
    'rest_lite': ('ResT', 'lite', 'rest.py', 'rest_lite'),
    'rest_small': ('ResT', 'small', 'rest.py', 'rest_small'),
    'rest_base': ('ResT', 'base', 'rest.py', 'rest_base'),
    'rest_large': ('ResT', 'large', 'rest.py', 'rest_large'),
    'container_light': ('ContainerLight', 'light', None, None),
    'riformer_s12': ('RIFormer', 's12', None, None),
    'riformer_s24': ('RIFormer', 's24', None, None),
    'riformer_s36': ('RIFormer', 's36', None, None),
    'riformer_m36': ('RIFormer', 'm36', None, None),
    'riformer_m48': ('RIFormer', 'm48', None, None),
}


def build_official_backbone(loader_folder, official_dir, model_name):
    """The official RMT / ResT classification model of ``model_name``
    (:data:`BACKBONE_MODELS`), drop path off, and the function that computes
    its features (``forward_features`` where it has one)."""
    kind, _, official_file, ctor = BACKBONE_MODELS[model_name]
    om = load_official_models(loader_folder)
    path = os.path.join(official_dir, official_file)
    if kind == 'RMT':
        fn = getattr(om.load_rmt_cls(path), ctor)
        model = fn(None) if 'args' in fn.__code__.co_varnames else fn()
        for m in model.modules():  # their drop path is on by default
            if type(m).__name__ == 'DropPath':
                m.drop_prob = 0.
    else:
        model = getattr(om.load_rest_cls(path), ctor)()
    return model, getattr(model, 'forward_features', model)


def backbone_step(model, fn, x, train: bool, amp=None) -> None:
    """One step of a backbone: ``fn(x)`` without grad, or with ``train``
    forward + backward of the sum of its outputs (then the gradients are
    dropped). ``amp`` (a torch dtype or None): the forward runs under
    ``torch.autocast`` of ``x``'s device type with it; the backward runs
    outside autocast. Without ``amp`` no autocast context is entered."""
    import contextlib

    import torch
    cast = (torch.autocast(x.device.type, dtype=amp)
            if amp is not None else contextlib.nullcontext())
    with cast:
        if not train:
            with torch.no_grad():
                fn(x)
            return
        out = fn(x)
        outs = out if isinstance(out, (tuple, list)) else [out]
        loss = sum(o.float().sum() for o in outs)
    loss.backward()
    model.zero_grad(set_to_none=True)
