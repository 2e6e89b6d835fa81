"""FLOPs and parameters of mmvitmix backbones, detectors and segmentors.

Three ways to call it::

    # a backbone in the papers' classification setting: backbone plus the
    # official classification head, one 224x224 image
    python tools/analysis_tools/get_flops.py RMT --arch s
    # any shipped config (detectors at 1280x800, segmentors at 512x512,
    # classifiers at 224x224 unless --shape is given)
    python tools/analysis_tools/get_flops.py configs/rmt/maskrcnn_rmt_s_1x.py
    python tools/analysis_tools/get_flops.py \\
        configs/rmt/upernet_rmt_s_160k_ade20k.py --shape 512 2048
    # the whole measured-vs-paper comparison (docs/model_zoo.md)
    python tools/analysis_tools/get_flops.py --table [--configs GLOB ...]

Counting (``--counter``): ``mmengine`` (default) is
``mmengine.analysis.get_model_complexity_info``, what MMDetection's and
MMSegmentation's own get_flops tools call and what MMPretrain's metafiles
report; it follows fvcore's rules (one per multiply-add of conv, linear,
matmul, einsum and attention; estimates for norms, upsampling, pooling;
nothing for elementwise ops and softmax), the rules RMT's authors used
(``fvcore.nn.FlopCountAnalysis``). ``torch`` is
``torch.utils.flop_counter.FlopCounterMode`` (two per multiply-add of
matmul, conv and attention only). The formulas of
:mod:`mmvitmix.ops.flops` make both count every attention backend
(``--backend``) exactly as the reference path.

``G`` is 10^9. ``paper G`` divides the mmengine count by 2^30, the unit the
RMT paper's numbers turn out to be in (docs/model_zoo.md, "FLOPs").
"""
import argparse
import fnmatch
import glob
import os
import sys
import warnings
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
from mmvitmix.apis import cli
from mmvitmix.apis.cli import ToolError, run

ROOT = Path(__file__).resolve().parents[2]

GIB = 2**30

#: (type, arch): paper params (M) and FLOPs (G) at 224x224 as published:
#: RMT and ResT (v1, v2) papers / READMEs, MMPretrain 1.2.0's RIFormer metafile. The
#: Container repository publishes params only.
PAPER = {
    ('RMT', 't'): (14, 2.5), ('RMT', 's'): (27, 4.5),
    ('RMT', 'b'): (54, 9.7), ('RMT', 'l'): (95, 18.2),
    ('ResT', 'lite'): (10.49, 1.4), ('ResT', 'small'): (13.66, 1.9),
    ('ResT', 'base'): (30.28, 4.3), ('ResT', 'large'): (51.63, 7.9),
    ('ResTV2', 'tiny'): (30, 4.1), ('ResTV2', 'small'): (41, 6.0),
    ('ResTV2', 'base'): (56, 7.9), ('ResTV2', 'large'): (87, 13.8),
    ('ContainerLight', 'light'): (21, None),
    ('RIFormer', 's12'): (11.92, 1.82), ('RIFormer', 's24'): (21.39, 3.41),
    ('RIFormer', 's36'): (30.86, 5.00), ('RIFormer', 'm36'): (56.17, 8.80),
    ('RIFormer', 'm48'): (73.47, 11.59),
}
VARIANTS = list(PAPER)

DEFAULT_SHAPES = {'det': (800, 1280), 'seg': (512, 512), 'cls': (224, 224)}
#: backbone type -> its archs (the variants of :data:`PAPER`)
KINDS = {}
for _kind, _arch in VARIANTS:
    KINDS.setdefault(_kind, []).append(_arch)
#: config default_scope -> task
TASKS = {'mmdet': 'det', 'mmseg': 'seg', 'mmpretrain': 'cls'}


# --------------------------------------------------------------------------
# the papers' classification setting
# --------------------------------------------------------------------------


class _Swish(nn.Module):

    def forward(self, x):
        return x * torch.sigmoid(x)


class RMTClsHead(nn.Module):
    """Official RMT classifier after the last stage: Linear(C, 1024) per
    token, BatchNorm, Swish, average pool, Linear(1024, classes)."""

    def __init__(self, in_dims, num_classes=1000, projection=1024):
        super().__init__()
        self.proj = nn.Linear(in_dims, projection)
        self.norm = nn.BatchNorm2d(projection)
        self.act = _Swish()
        self.fc = nn.Linear(projection, num_classes)

    def forward(self, x):
        x = self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self.act(self.norm(x))
        return self.fc(x.mean((2, 3)))


class PoolLinearHead(nn.Module):
    """Average pool and a linear classifier (ResT, Container, RIFormer: the
    last stage's norm is the backbone's output norm)."""

    def __init__(self, in_dims, num_classes=1000):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_dims, num_classes)

    def forward(self, x):
        return self.fc(self.pool(x).flatten(1))


class Classifier(nn.Module):

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x):
        return self.head(self.backbone(x)[-1])


def build_classifier(kind, arch, backend=None):
    """mmvitmix backbone ``kind``/``arch`` with the official classifier."""
    import mmvitmix.models  # noqa: F401
    from mmvitmix.registry import MODELS
    cfg = dict(
        type=f'mmvitmix.{kind}', arch=arch, out_indices=(3, ),
        drop_path_rate=0.)
    if kind == 'RMT':
        cfg['out_norm_cfg'] = None  # the official classifier has its own
    if backend is not None and kind in ('RMT', 'ResT', 'ResTV2'):
        cfg['attn_backend'] = backend
    backbone = MODELS.build(cfg)
    dims = backbone.embed_dims[-1] if hasattr(backbone, 'embed_dims') \
        else None
    if dims is None:
        dims = _last_dims(backbone)
    head = (RMTClsHead(dims) if kind == 'RMT' else PoolLinearHead(dims))
    return Classifier(backbone, head).eval()


def _last_dims(backbone):
    with torch.no_grad():
        return backbone(torch.zeros(1, 3, 64, 64))[-1].shape[1]


# --------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------


def config_task(cfg):
    return TASKS[cfg.get('default_scope', 'mmdet')]


def build_from_config(path, shape=None, backend=None):
    """(model, inputs, task, shape) of a shipped config, in eval mode, with
    ``model.forward`` bound to the tensor-mode forward the counters trace
    (as MMDetection's / MMSegmentation's get_flops tools do)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(path)
    task = config_task(cfg)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    if backend is not None:
        os.environ['MMVITMIX_ATTN_BACKEND'] = backend
    shape = tuple(shape or DEFAULT_SHAPES[task])
    height, width = shape
    model_cfg = cfg.model
    if task == 'det':
        from mmdet.registry import MODELS
        from mmdet.structures import DetDataSample
        model = MODELS.build(model_cfg)
        meta = dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                    batch_input_shape=shape, scale_factor=(1.0, 1.0))
        samples = [DetDataSample(metainfo=meta)]
        model.forward = partial(model.forward, data_samples=samples,
                                mode='tensor')
    elif task == 'seg':
        from mmseg.registry import MODELS
        from mmseg.structures import SegDataSample
        if model_cfg.get('auxiliary_head') is not None:
            model_cfg.auxiliary_head = None  # as mmseg's get_flops
        model = MODELS.build(model_cfg)
        meta = dict(img_shape=shape, ori_shape=shape, pad_shape=shape)
        samples = [SegDataSample(metainfo=meta)]
        model.forward = partial(model.forward, data_samples=samples,
                                mode='tensor')
    else:
        from mmpretrain.registry import MODELS
        model = MODELS.build(model_cfg)
        model.forward = partial(model.forward, mode='tensor')
    from mmengine.model import revert_sync_batchnorm
    model = revert_sync_batchnorm(model).eval()
    inputs = torch.rand(1, 3, height, width)
    return model, inputs, task, shape


# --------------------------------------------------------------------------
# counting
# --------------------------------------------------------------------------


def count(model, inputs, counter='mmengine'):
    """(multiply-adds as the counter counts them, parameters)."""
    import mmvitmix.ops.flops as flops
    params = sum(p.numel() for p in model.parameters())
    if counter == 'torch':
        from torch.utils.flop_counter import FlopCounterMode
        flops.register_torch_formulas(load_ext=True)
        mode = FlopCounterMode(display=False)
        with torch.no_grad(), mode:
            model(inputs)
        return mode.get_total_flops(), params
    from mmengine.analysis import get_model_complexity_info
    flops.register_mmengine_handles()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        info = get_model_complexity_info(
            model, inputs=(inputs, ), show_table=False, show_arch=False)
    return info['flops'], params


#: operators that are the attention cores' two matmuls under the mmengine
#: analyzer (SDPA or the reference path's matmul / einsum when traced)
ATTENTION_OPS = ('scaled_dot_product_attention', 'retention_forward',
                 'emsa_forward', 'matmul', 'bmm', 'einsum')


def count_split(model, inputs):
    """(all multiply-adds, those of the attention matmuls, parameters) with
    mmengine's ``FlopAnalyzer``.

    The total minus the attention matmuls is what MMDetection 2.x's /
    MMSegmentation 0.x's ``get_flops.py`` counted (mmcv 1.x module hooks:
    convs, linears, norms, pooling; functional matmuls unseen), the
    convention of RMT's detection and segmentation tables.
    """
    import mmvitmix.ops.flops as flops
    from mmengine.analysis import FlopAnalyzer
    flops.register_mmengine_handles()
    params = sum(p.numel() for p in model.parameters())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        analyzer = FlopAnalyzer(model, (inputs, ))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        total = analyzer.total()
        by_op = analyzer.by_operator()
    attention = sum(v for k, v in by_op.items()
                    if k.split('::')[-1] in ATTENTION_OPS)
    return total, attention, params


def _quiet_mmengine():
    import logging
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.ERROR)
    logging.getLogger('mmengine').setLevel(logging.ERROR)


def _g(value, unit=1e9, digits=2):
    return f'{value / unit:.{digits}f}'


def _pct(measured, paper):
    return f'{100 * (measured - paper) / paper:+.1f}%'


def table_rows(args):
    lines = [
        '| model | params (M) | params paper (M) | mmengine G (10^9) | '
        'mmengine / 2^30 | FLOPs paper (G) | diff, paper unit |',
        '| --- | --- | --- | --- | --- | --- | --- |'
    ]
    print('\n'.join(lines), flush=True)
    for kind, arch in VARIANTS:
        model = build_classifier(kind, arch, args.backend)
        macs, params = count(model, torch.rand(1, 3, 224, 224), args.counter)
        p_params, p_flops = PAPER[(kind, arch)]
        # RIFormer's paper figures are MMPretrain's, ResT v2's the official
        # README's: decimal G (docs/model_zoo.md, "FLOPs")
        unit = 1e9 if kind in ('RIFormer', 'ResTV2') else GIB
        diff = _pct(macs / unit, p_flops) if p_flops else '-'
        row = (f'| {kind}-{arch} | {params / 1e6:.2f} | {p_params} | '
               f'{_g(macs)} | {_g(macs, GIB)} | '
               f'{p_flops if p_flops else "n/a"} | {diff} |')
        print(row, flush=True)
        lines.append(row)
    if args.configs is None:
        return lines
    head = ['', '| config | task | input (HxW) | params (M) | '
            'mmengine G (10^9) | mmengine / 2^30 | without attention '
            'matmuls G (10^9) |', '| --- | --- | --- | --- | --- | --- | --- |']
    print('\n'.join(head), flush=True)
    lines += head
    paths = []
    for pattern in args.configs:
        paths += sorted(glob.glob(pattern, recursive=True))
    paths = [p for p in paths if '/_base_/' not in p and
             '/deploy/' not in p]
    for path in paths:
        cfg_shapes = [None]
        if fnmatch.fnmatch(os.path.basename(path), 'upernet_*'):
            cfg_shapes = [(512, 512), (512, 2048)]
        for shape in cfg_shapes:
            try:
                model, inputs, task, used = build_from_config(
                    path, shape, args.backend)
                macs, attention, params = count_split(model, inputs)
                row = (f'| {path} | {task} | {used[0]}x{used[1]} | '
                       f'{params / 1e6:.2f} | {_g(macs, digits=1)} | '
                       f'{_g(macs, GIB, 1)} | '
                       f'{_g(macs - attention, digits=1)} |')
            except Exception as exc:  # keep the table going
                row = f'| {path} | failed: {type(exc).__name__}: {exc} |'
            print(row, flush=True)
            lines.append(row)
    return lines


def check_args(args, configs_given):
    """Refuse what cannot be counted before anything is built."""
    if args.backend == 'flex' and args.counter == 'torch':
        raise ToolError("--backend flex: FlexAttention does not run under "
                        "torch's FlopCounterMode; use --counter mmengine (it "
                        "counts every backend as the reference)")
    if args.shape is not None:
        cli.positive_shape('--shape', args.shape)
    if args.out is not None:
        if not args.table:
            raise ToolError('--out writes the table of --table; add --table '
                            'or drop --out')
        cli.output_file('--out', args.out)
    if args.table:
        if args.target or args.arch or args.shape:
            raise ToolError('--table counts every variant at 224x224 (and '
                            'the configs of --configs at their own sizes); '
                            'give no target, --arch or --shape with it')
        if args.configs is None and not configs_given:
            args.configs = [str(ROOT / 'configs' / '**' / '*.py')]
        elif not args.configs:
            args.configs = None
        for pattern in args.configs or []:
            if not glob.glob(pattern, recursive=True):
                raise ToolError(f'--configs {pattern!r} matches no file')
        return
    if args.configs is not None:
        raise ToolError('--configs is for --table; give one config as the '
                        'target instead')
    if not args.target:
        raise ToolError('nothing to count: give a backbone type '
                        f'({", ".join(KINDS)}), a config file (.py) or '
                        '--table')
    if args.target.endswith('.py') or os.sep in args.target or \
            os.path.exists(args.target):
        cfg = cli.config_file('config', args.target)
        scope = cfg.get('default_scope', 'mmdet')
        if scope not in TASKS:
            raise ToolError(f'config {args.target!r}: default_scope '
                            f'{scope!r} is not one of {list(TASKS)}')
        if args.arch or args.no_head:
            raise ToolError('--arch and --no-head go with a backbone type; '
                            'a config builds its own model')
        return
    if args.target not in KINDS:
        raise ToolError(f'unknown target {args.target!r}: give a backbone '
                        f'type ({", ".join(KINDS)}) or a config file (.py)')
    if args.arch is None or args.arch.lower() not in KINDS[args.target]:
        got = 'none' if args.arch is None else repr(args.arch)
        raise ToolError(f'--arch {got} for {args.target}: accepted '
                        f'{KINDS[args.target]}')


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n', 1)[1])
    parser.add_argument('target', nargs='?', help='backbone type (RMT, '
                        'ResT, ContainerLight, RIFormer) or a config file')
    parser.add_argument('--arch', help='backbone arch (with a type)')
    parser.add_argument('--shape', type=int, nargs='+', help='input H [W]')
    parser.add_argument('--counter', default='mmengine',
                        choices=['mmengine', 'torch'])
    parser.add_argument('--backend', choices=[
        'auto', 'fused', 'sdpa', 'flex', 'reference'
    ], help='attention backend (default: the environment / auto)')
    parser.add_argument('--no-head', action='store_true',
                        help='backbone only (all four stages, no classifier)')
    parser.add_argument('--table', action='store_true',
                        help='every variant, and the configs of --configs')
    parser.add_argument('--configs', nargs='*', help='config globs for '
                        "--table (default with --table: 'configs/**/*.py'; "
                        'give none to skip)')
    parser.add_argument('--out', help='also write the table to this file')
    args = parser.parse_args(argv)
    check_args(args, '--configs' in (sys.argv if argv is None else argv))
    torch.manual_seed(0)
    _quiet_mmengine()
    if args.table:
        lines = table_rows(args)
        if args.out:
            cli.write_file(args.out, '\n'.join(lines) + '\n')
        return lines

    unit = 'MACs (mmengine, one per multiply-add)' if \
        args.counter == 'mmengine' else 'FLOPs (torch, two per multiply-add)'
    if args.target.endswith('.py'):
        model, inputs, task, shape = build_from_config(
            args.target, args.shape and (args.shape * 2)[:2], args.backend)
        what = f'{args.target} ({task})'
    else:
        shape = tuple((args.shape or [224]) * 2)[:2]
        arch = args.arch
        if args.no_head:
            import mmvitmix.models  # noqa: F401
            from mmvitmix.registry import MODELS
            cfg = dict(
                type=f'mmvitmix.{args.target}', arch=arch,
                drop_path_rate=0.)
            if args.backend and args.target in ('RMT', 'ResT', 'ResTV2'):
                cfg['attn_backend'] = args.backend
            model = MODELS.build(cfg).eval()
        else:
            model = build_classifier(args.target, arch, args.backend)
        inputs = torch.rand(1, 3, *shape)
        what = (f'{args.target}-{arch} '
                f'{"backbone" if args.no_head else "classifier"}')
    attention = None
    if args.counter == 'mmengine':
        macs, attention, params = count_split(model, inputs)
    else:
        macs, params = count(model, inputs, args.counter)
    print(f'{what}, input {shape[0]}x{shape[1]}, backend '
          f'{args.backend or os.environ.get("MMVITMIX_ATTN_BACKEND", "auto")}'
          f'\n{unit}: {macs / 1e9:.3f} G (10^9), {macs / GIB:.3f} G (2^30)'
          f'\nparams: {params / 1e6:.3f} M ({params:,})')
    if attention is not None:
        print(f'of which attention matmuls: {attention / 1e9:.3f} G; '
              f'without them: {(macs - attention) / 1e9:.3f} G (10^9), the '
              'convention of mmdet 2.x / mmseg 0.x get_flops (mmcv 1.x '
              'module hooks), which RMT\'s detection tables use')
    return macs, params


if __name__ == '__main__':
    run(main)
