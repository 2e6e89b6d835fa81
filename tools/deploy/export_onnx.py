"""Export a backbone, a detector's backbone + neck or a whole segmentor to
ONNX, and check the file in onnxruntime.

Usage::

    python tools/deploy/export_onnx.py CONFIG [CHECKPOINT] OUT.onnx \\
        [--shape H W] [--dynamic] [--tol TOL]
    python tools/deploy/export_onnx.py mmvitmix.RMT --arch t [CKPT] OUT.onnx

What is exported (and what the graph returns):

* a backbone type (``mmvitmix.RMT``, ``RMT``, ... with ``--arch``): the
  backbone, returning its ``out_indices`` feature maps ``feat0..featN``;
* an MMDetection config: backbone + neck (``model.extract_feat``), returning
  the FPN levels ``feat0..featN``. Two-stage heads with proposal sampling,
  NMS and RoIAlign are deployment-framework work (mmdeploy), not this tool's;
* an MMSegmentation config (EncoderDecoder): backbone, neck, decode head and
  the bilinear resize to the input size, returning ``seg_logits``
  (N, classes, H, W), as mmseg's ``predict`` computes them before argmax;
* an MMPretrain config: the classifier's logits ``cls_score``.

RIFormer is exported in its deploy form: every module with
``switch_to_deploy()`` is re-parameterised first (the tool says so).

Exporter: ``torch.onnx.export`` with ``dynamo=True`` (torch.export, then
onnxscript), opset 18. The attention seams use only standard ops while a
graph is exported (RMT's decay becomes an additive mask of
``scaled_dot_product_attention``; see mmvitmix.ops.backends), so no custom
op reaches the file. ``--dynamic`` makes height and width symbolic; RMT's
decay and rotary tables follow the feature sizes inside the graph. When the
dynamic export fails (torch.export cannot express Container-Light's
stage-4 attention over a symbolic grid), the tool exports the fixed size
instead and says so, with the exporter's reason; likewise when the dynamic
graph is right at the export size but not at the second one (the tool then
re-exports the fixed size and prints both errors).

The graph's input is the normalised image batch (1, 3, H, W): the model's
``data_preprocessor`` (mean / std, BGR->RGB, padding) is not part of it.

Verification: onnxruntime (CPU) runs the file on the export shape and, for
``--dynamic``, on a second, odd shape; each output is compared with PyTorch
(float32, the module that was exported) by ``max|ort - torch| / max|torch|``.
The judge is the model's own float32 noise: the same measure between the
float32 module and a float64 copy of it (same weights, same input). An
output passes when its error is at most ``max(2 x that noise, 1e-5)``, or
at most ``--tol`` when a fixed tolerance is given; the tool prints the error,
the noise and the limit of every output. A randomly initialised or
ill-conditioned model (ResT's instance-normalised attention maps are nearly
uniform then) has float32 noise far above 1e-5, which a fixed tolerance
would blame on the export; a well-conditioned one has noise far below it,
which a loose fixed tolerance would let a wrong export hide in. When an
output fails, the file is deleted and the tool exits with status 1.
"""
import argparse
import copy
import os
import os.path as osp
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmvitmix.apis import (add_min_coverage_argument, check_config,
                           check_file, check_output_file, check_shape)
from mmvitmix.apis.cli import ToolError, run
from mmvitmix.utils import DEFAULT_MIN_COVERAGE, check_min_coverage

OPSET = 18
DYNAMIC_MIN = 64
#: the limit's floor and the factor on the float32-vs-float64 noise
NOISE_FLOOR = 1e-5
NOISE_FACTOR = 2.


class BackboneExport(nn.Module):
    """backbone(x) as a tuple of tensors."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return tuple(self.backbone(x))


class DetectorExport(nn.Module):
    """A detector's backbone + neck (``extract_feat``)."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, x):
        return tuple(self.detector.extract_feat(x))


class SegmentorExport(nn.Module):
    """EncoderDecoder: features, decode head, resize to the input size."""

    def __init__(self, segmentor):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, x):
        logits = self.segmentor.decode_head(self.segmentor.extract_feat(x))
        return F.interpolate(
            logits,
            size=x.shape[2:],
            mode='bilinear',
            align_corners=self.segmentor.align_corners)


class ClassifierExport(nn.Module):

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(x, mode='tensor')


def build(target: str,
          arch: Optional[str],
          checkpoint: Optional[str],
          cfg_options=None,
          min_coverage: float = DEFAULT_MIN_COVERAGE):
    """(module to export, output names, description).

    A checkpoint must provide at least ``min_coverage`` of the model's
    parameters (the one rule, :func:`mmvitmix.utils.check_coverage`): a
    backbone type through its ``init_cfg`` (official files converted), a
    config's whole model through :func:`mmvitmix.utils.load_checked`.
    """
    from mmengine.registry import MODELS, init_default_scope
    if not target.endswith('.py'):
        import mmvitmix.models  # noqa: F401  registers the backbones
        name = target if target.startswith('mmvitmix.') else \
            f'mmvitmix.{target}'
        cfg = dict(type=name, drop_path_rate=0.)
        if arch:
            cfg['arch'] = arch
        backbone = MODELS.build(cfg)
        if checkpoint:
            # the backbones' Pretrained loading (official files converted)
            backbone.load_pretrained(
                checkpoint,
                min_coverage=min_coverage,
                opt_in='pass --min-coverage {share}')
        n = len(backbone.out_indices)
        return (BackboneExport(backbone), [f'feat{i}' for i in range(n)],
                f'backbone {name}')
    from mmvitmix.apis import load_config
    from mmvitmix.utils import load_checked
    cfg = load_config(target, cfg_options)
    init_default_scope(cfg.default_scope)
    cfg.model.get('backbone', {}).pop('init_cfg', None)
    if cfg.model.get('backbone', {}).get('drop_path_rate') is not None:
        cfg.model.backbone.drop_path_rate = 0.
    model = MODELS.build(cfg.model)
    if checkpoint:
        load_checked(model, checkpoint, min_coverage)
    scope = cfg.default_scope
    if scope == 'mmseg':
        return (SegmentorExport(model), ['seg_logits'],
                'segmentor (backbone, neck, decode head, resize)')
    if scope == 'mmpretrain':
        return ClassifierExport(model), ['cls_score'], 'classifier logits'
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.zeros(1, 3, 64, 64))
    return (DetectorExport(model), [f'feat{i}' for i in range(len(feats))],
            'detector backbone + neck (extract_feat)')


def reparameterize(module: nn.Module) -> List[str]:
    done = []
    for name, m in module.named_modules():
        if hasattr(m, 'switch_to_deploy') and not getattr(m, 'deploy', False):
            m.switch_to_deploy()
            done.append(name or type(m).__name__)
    return done


def _as_float64(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


def rel_error(got, want) -> float:
    """``max|got - want| / max|want|`` (arrays or tensors, in float64)."""
    got, want = _as_float64(got), _as_float64(want)
    if got.size == 0 and want.size == 0:
        return 0.
    scale = max(float(np.abs(want).max()), 1e-12)
    return float(np.abs(got - want).max() / scale)


def float64_copy(module: nn.Module) -> nn.Module:
    """The judge of the float32 noise: a float64 copy, same weights."""
    return copy.deepcopy(module).double().eval()


def limit_of(noise: float, tol: Optional[float]) -> float:
    """The largest onnxruntime error an output may have."""
    if tol is not None:
        return tol
    return max(NOISE_FACTOR * noise, NOISE_FLOOR)


def export(module, names, shape, out, dynamic):
    x = torch.randn(1, 3, *shape)
    kwargs = dict(input_names=['input'], output_names=names, opset_version=OPSET,
                  dynamo=True, external_data=False)
    if dynamic:
        # 64: Container-Light's stage-4 grid needs at least 2x2 tokens
        h = torch.export.Dim('height', min=DYNAMIC_MIN, max=4096)
        w = torch.export.Dim('width', min=DYNAMIC_MIN, max=4096)
        kwargs['dynamic_shapes'] = {'x': {2: h, 3: w}}
    program = torch.onnx.export(module, (x, ), **kwargs)
    program.save(out)


def second_shape(shape, names):
    """The second verification size of a dynamic export.

    Odd sizes (H + 35, W + 61), except for segmentors: their decode heads
    upsample by fixed factors and add maps of the stage sizes, which only
    line up when H and W are multiples of 32 (mmseg's data preprocessor pads
    to that), so those get H + 32, W + 64.
    """
    if names == ['seg_logits']:
        return shape[0] + 32, shape[1] + 64
    return shape[0] + 35, shape[1] + 61


def export_with_fallback(module, names, shape, out, dynamic):
    """Export; when a dynamic export fails, export the fixed size instead.

    Returns (whether the file has symbolic height and width, why not when
    dynamic was asked for but failed).
    """
    if not dynamic:
        export(module, names, shape, out, False)
        return False, None
    try:
        export(module, names, shape, out, True)
        return True, None
    except Exception as exc:
        reason = f'{type(exc).__name__}: {str(exc).strip().splitlines()[-1]}'
        for line in str(exc).splitlines():
            if 'Exception summary' in line or line.startswith('<class'):
                reason = line.strip()
        export(module, names, shape, out, False)
        return False, reason[:500]


def _outputs(module, x):
    with torch.no_grad():
        out = module(x)
    return tuple(out) if isinstance(out, (tuple, list)) else (out, )


def verify(module, out, shapes, names, tol=None, module64=None):
    """Run ``out`` in onnxruntime at ``shapes`` and judge every output.

    Args:
        module: the float32 module that was exported.
        out (str): the .onnx file.
        shapes: (H, W) sizes to run.
        names: output names, for the report.
        tol (float | None): a fixed limit on the relative error; None
            judges by the float32 noise, ``max(2 x noise, 1e-5)``.
        module64: the float64 copy (:func:`float64_copy`); made here
            when not given.

    Returns:
        (bool, list[str]): whether every output is within its limit, and
        one line per output: the size, onnxruntime vs float32, float32
        vs float64 and the limit.
    """
    import onnxruntime as ort
    sess = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    if module64 is None:
        module64 = float64_copy(module)
    ok = True
    lines = []
    gen = torch.Generator().manual_seed(1)
    for shape in shapes:
        x = torch.randn(1, 3, *shape, generator=gen)
        want = _outputs(module, x)
        want64 = _outputs(module64, x.double())
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        if len(got) != len(want):
            raise SystemExit(f'error: onnxruntime returned {len(got)} '
                             f'outputs, PyTorch {len(want)}')
        for name, g, w, w64 in zip(names, got, want, want64):
            if tuple(g.shape) != tuple(w.shape):
                err = float('inf')
            else:
                err = rel_error(g, w)
            noise = rel_error(w, w64)
            limit = limit_of(noise, tol)
            passed = err <= limit
            ok = ok and passed
            lines.append(f'  {shape[0]}x{shape[1]} {name} {tuple(w.shape)}: '
                         f'onnxruntime vs float32 {err:.2e}, float32 vs '
                         f'float64 {noise:.2e}, limit {limit:.2e} '
                         f'{"ok" if passed else "FAIL"}')
    return ok, lines


def judge_text(tol: Optional[float]) -> str:
    if tol is not None:
        return f'limit: --tol {tol:g} (fixed)'
    return (f'limit: max({NOISE_FACTOR:g} x float32 vs float64, '
            f'{NOISE_FLOOR:g}) per output')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export to ONNX and check the file in onnxruntime.')
    parser.add_argument('target', help='config file, or a backbone type '
                        '(mmvitmix.RMT, ResT, ResTV2, ContainerLight, '
                        'RIFormer)')
    parser.add_argument('paths', nargs='+', metavar='[CHECKPOINT] OUT',
                        help='optional checkpoint, then the output .onnx')
    parser.add_argument('--arch', help='backbone arch (backbone types only)')
    parser.add_argument('--shape', type=int, nargs=2, default=[224, 224],
                        metavar=('H', 'W'))
    parser.add_argument('--dynamic', action='store_true',
                        help='symbolic height and width')
    parser.add_argument(
        '--tol',
        type=float,
        default=None,
        help='a fixed limit on max|onnxruntime - torch| / max|torch|; '
        f'default: max({NOISE_FACTOR:g} x the model\'s own float32 vs '
        f'float64 error, {NOISE_FLOOR:g}) per output')
    add_min_coverage_argument(parser)
    args = parser.parse_args(argv)
    if len(args.paths) > 2:
        parser.error('give at most CHECKPOINT and OUT')
    args.checkpoint = args.paths[0] if len(args.paths) == 2 else None
    args.out = args.paths[-1]
    return args


def check_args(args) -> None:
    """Everything the user gave, before a model is built (ToolError)."""
    if args.target.endswith('.py'):
        check_config(args.target)
        if args.arch:
            raise ToolError('--arch applies to backbone types, not configs')
    else:
        import mmvitmix.models  # noqa: F401  registers the backbones
        from mmvitmix.models import backbones
        from mmvitmix.registry import MODELS
        name = args.target.split('.', 1)[-1]
        known = sorted(n for n in backbones.__all__
                       if isinstance(MODELS.get(n), type))
        if name not in known:
            raise ToolError(f'unknown target {args.target!r}: give a config '
                            f'file (.py) or a backbone type, one of {known}')
    if args.checkpoint is not None:
        check_file(args.checkpoint, 'checkpoint')
    check_output_file(args.out, 'OUT', ('.onnx', ), inputs=[args.checkpoint])
    check_shape(args.shape)
    if args.dynamic and min(args.shape) < DYNAMIC_MIN:
        raise ToolError(f'--dynamic exports sizes from {DYNAMIC_MIN} up; '
                        f'--shape must be at least {DYNAMIC_MIN}x'
                        f'{DYNAMIC_MIN}, got {args.shape}')
    if args.tol is not None and not args.tol >= 0:
        raise ToolError(f'--tol must be a number >= 0, got {args.tol}')
    check_min_coverage(args.min_coverage, '--min-coverage')


def main(argv=None) -> int:
    args = parse_args(argv)
    check_args(args)
    module, names, what = build(
        args.target, args.arch, args.checkpoint,
        min_coverage=args.min_coverage)
    module.eval()
    folded = reparameterize(module)
    print(f'exporting {what} of {args.target}' +
          (f' (arch {args.arch})' if args.arch else '') +
          f' at {args.shape[0]}x{args.shape[1]}, opset {OPSET}, '
          f'{"dynamic" if args.dynamic else "fixed"} height/width')
    if folded:
        print(f're-parameterised for deployment first: {len(folded)} '
              'modules switched to their deploy form (RIFormer: affine '
              'token mixers folded into the norms)')
    module64 = float64_copy(module)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    try:
        dynamic, why_fixed = export_with_fallback(module, names,
                                                  tuple(args.shape), args.out,
                                                  args.dynamic)
    except Exception as exc:  # the exporter's own message, then stop
        if osp.exists(args.out):
            os.remove(args.out)
        print(f'error: export failed: {type(exc).__name__}: '
              f'{str(exc)[:2000]}', file=sys.stderr)
        return 1
    if why_fixed:
        print(f'NOTE: fixed-size export ({args.shape[0]}x{args.shape[1]}): '
              f'the export with symbolic height and width failed: '
              f'{why_fixed}')
    args.dynamic = dynamic
    shapes = [tuple(args.shape)]
    if args.dynamic:  # a second shape: odd, or for segmentors divisible by 32
        shapes.append(second_shape(tuple(args.shape), names))
    ok, lines = verify(module, args.out, shapes, names, args.tol, module64)
    if args.dynamic and not ok:
        first, _ = verify(module, args.out, shapes[:1], names, args.tol,
                          module64)
        if first:  # right at the export size only: fix it
            print('NOTE: fixed-size export '
                  f'({args.shape[0]}x{args.shape[1]}): the graph with symbolic '
                  'height and width did not reproduce PyTorch at '
                  f'{shapes[1][0]}x{shapes[1][1]}:')
            print('\n'.join(lines))
            export(module, names, tuple(args.shape), args.out, False)
            args.dynamic = False
            ok, lines = verify(module, args.out, shapes[:1], names,
                               args.tol, module64)
    print('onnxruntime vs PyTorch float32, and PyTorch float32 vs float64 '
          '(the model\'s own noise), max|a - b| / max|b|; ' +
          judge_text(args.tol) + ':')
    print('\n'.join(lines))
    if not ok:
        os.remove(args.out)
        print(f'error: onnxruntime output off by more than its limit '
              f'({judge_text(args.tol)}); {args.out} deleted',
              file=sys.stderr)
        return 1
    print(f'wrote {args.out} ({osp.getsize(args.out) / 2**20:.1f} MiB); '
          f'inputs: input (1, 3, {"H, W" if args.dynamic else "%d, %d" % tuple(args.shape)}); '
          f'outputs: {", ".join(names)}')
    return 0


if __name__ == '__main__':
    run(main)
