"""Write the parity fixtures of ``tests/data/parity/`` from the official code.

The official implementations are not part of this project and are never
copied into it: fetch them yourself and pass their paths. For each family
this script builds a small official model, gives every float parameter and
BatchNorm statistic a deterministic random value, runs the official forward
on CPU in eval mode (in float64: float32 weights and inputs, the outputs
stored in float32) and saves, per family, one file with

* ``checkpoint``: the weights in the layout of the official release files
  (``{'model': ...}``; RIFormer: mmpretrain's ``{'state_dict':
  {'backbone.' ...}}``), classification heads included;
* ``config`` (the constructor arguments that mmvitmix's ``arch`` takes) and
  ``official_kwargs`` (the other arguments given to the official class);
* ``inputs``: NCHW image batches; ``stage_outputs[i]``: the official
  feature map of each of the 4 stages for ``inputs[i]``, NCHW, taken before
  any output norm (RMT: before the stage's downsampling); RIFormer:
  ``normed_outputs[i]`` after mmpretrain's output norms instead;
* ResT, ResT v2, Container: ``stage4_after_norm[i]``, stage 4 after the
  ImageNet model's final norm (key ``norm``);
* ResT v2: ``seg_norms`` (random output norms in the official mmseg 0.x
  backbone's layout, ``norm_{k}.*``) and ``normed_outputs[i]``, the
  official mmseg backbone's outputs with those norms;
* ``source``: repository, path and SHA-256 of every official file used.

Inputs whose sides are not multiples of 32 are included for the families
whose official code runs them (``odd_input`` tells): the official ResT v2
code reshapes by ``H // sr`` and accepts multiples of 32 only, the official
Container-Light asserts the one input size it was built for.

Usage (after fetching the repositories; every argument is optional, the
families whose sources are given are written)::

    python tools/make_parity_fixtures.py \\
        --rmt RMT/classfication_release/RMT.py \\
        --rest ResT/models/rest.py \\
        --restv2 ResT/models/rest_v2.py \\
        --restv2-seg ResT/semantic_segmentation/backbone/rest_v2.py \\
        --container container/models.py \\
        --mmpretrain mmpretrain/mmpretrain \\
        --out tests/data/parity

The official files import a few helpers from timm, fvcore, einops, mmcv
0.x and mmseg 0.x; where those are not installed, minimal stand-ins are
put in ``sys.modules`` for the run (they are not used by the forward pass
in eval mode, except ``to_2tuple``, given its meaning).
"""
import argparse
import hashlib
import os.path as osp
import sys
import tempfile
import types
import warnings
from typing import Callable, Dict, List

import torch
import torch.nn as nn
from mmvitmix.apis import cli
from mmvitmix.apis.cli import ToolError, run

#: the fixtures' official models are tiny: every file stays well under 1 MB
SEED = 20260
#: batch, channels, height, width of the inputs (the smallest side 32,
#: odd sides)
INPUT_SHAPES = [(1, 3, 64, 96), (1, 3, 32, 160), (1, 3, 65, 47)]


# --------------------------------------------------------------------------
# loading official source files
# --------------------------------------------------------------------------
def _stub_module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules.setdefault(name, module)
    return sys.modules[name]


def install_stand_ins() -> None:
    """Minimal stand-ins for the helper packages the official files import
    (only where the real package is missing)."""

    def to_2tuple(x):
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    class DropPath(nn.Module):  # identity in eval mode

        def __init__(self, p=0.):
            super().__init__()
            self.p = p

        def forward(self, x):
            return x

    def trunc_normal_(t, mean=0., std=1., a=-2., b=2.):
        with torch.no_grad():
            return nn.init.trunc_normal_(t, mean=mean, std=std, a=a, b=b)

    try:
        import timm  # noqa: F401
    except ImportError:
        _stub_module('timm')
        _stub_module('timm.models')
        _stub_module('timm.models.layers', DropPath=DropPath,
                     to_2tuple=to_2tuple, trunc_normal_=trunc_normal_)
        _stub_module('timm.models.registry', register_model=lambda f: f)
        _stub_module('timm.models.vision_transformer',
                     VisionTransformer=nn.Module,
                     _cfg=lambda url='', **kw: dict(url=url, **kw))
    try:
        import fvcore.nn  # noqa: F401
    except ImportError:
        _stub_module('fvcore')
        _stub_module('fvcore.nn', FlopCountAnalysis=None,
                     flop_count_table=None)
    try:
        import einops  # noqa: F401
    except ImportError:
        _stub_module('einops', einsum=None)


def sha256(path: str) -> str:
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def load_source(path: str, name: str, replace=()) -> types.ModuleType:
    """Execute an official source file as module ``name`` (with textual
    ``replace`` pairs for its package-relative imports)."""
    install_stand_ins()
    with open(path) as f:
        src = f.read()
    for old, new in replace:
        if old not in src:
            raise ValueError(f'{path}: expected to find {old!r}')
        src = src.replace(old, new)
    module = types.ModuleType(name)
    module.__file__ = path
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        exec(compile(src, path, 'exec'), module.__dict__)
    return module


# --------------------------------------------------------------------------
# random weights, forward hooks
# --------------------------------------------------------------------------
def randomize_state(model: nn.Module, seed: int,
                    keep: Callable[[str], bool] = lambda k: False) -> dict:
    """Deterministic random values for every float entry of the state
    dict (parameters and buffers, BatchNorm statistics included), loaded
    into ``model``; ``keep(key)`` keeps an entry as built (derived buffers,
    e.g. RMT's rotary angles and decays). Returns the state dict."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if not value.is_floating_point() or keep(key):
            state[key] = value.clone()
            continue
        if key.endswith('running_var'):
            new = torch.rand(value.shape, generator=gen) + 0.5
        elif value.dim() >= 2:
            fan_in = value[0].numel()
            new = torch.randn(value.shape, generator=gen) / fan_in**0.5
        elif key.endswith('weight'):
            new = 1 + 0.2 * torch.randn(value.shape, generator=gen)
        else:
            new = 0.2 * torch.randn(value.shape, generator=gen)
        state[key] = new.to(value.dtype)
    model.load_state_dict(state)
    return state


class Capture:
    """Forward (pre-)hooks that record tensors by name."""

    def __init__(self):
        self.values: Dict[str, object] = {}
        self.handles = []

    def pre(self, module: nn.Module, name: str) -> None:
        def hook(mod, args):
            self.values[name] = args[0].detach().clone()

        self.handles.append(module.register_forward_pre_hook(hook))

    def post(self, module: nn.Module, name: str) -> None:
        def hook(mod, args, out):
            self.values[name] = out

        self.handles.append(module.register_forward_hook(hook))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def tokens_to_nchw(x: torch.Tensor, hw) -> torch.Tensor:
    """(B, N, C) tokens on an ``hw`` grid as a contiguous NCHW map."""
    bsz, _, channels = x.shape
    return x.transpose(1, 2).reshape(bsz, channels, *hw).contiguous()


def make_inputs(seed: int, shapes=INPUT_SHAPES) -> List[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for shape in shapes]


def _to_float32(value):
    if isinstance(value, torch.Tensor):
        return value.float().contiguous()
    if isinstance(value, (list, tuple)):
        return [_to_float32(v) for v in value]
    return value


def run_all(fn: Callable[[torch.Tensor], dict], inputs: List[torch.Tensor],
            models: List[nn.Module]) -> dict:
    """Run ``fn`` (input -> {name: outputs}) on every input the official
    code accepts; the first (sides multiples of 32) must run.

    The official ``models`` run in float64 (their float32 weights and the
    float32 inputs are exact in float64) and the outputs are stored in
    float32: the reference is the official function itself, not one
    float32 rounding of it, so a correct float32 port lands within its own
    rounding (~1e-6 of the scale) instead of twice that.
    """
    for model in models:
        model.double()
    kept, results = [], {}
    for i, x in enumerate(inputs):
        try:
            with torch.no_grad():
                out = fn(x.double())
        except (RuntimeError, AssertionError) as exc:
            if i == 0:
                raise
            print(f'  official code refuses input {tuple(x.shape)}: '
                  f'{str(exc).splitlines()[0]}')
            continue
        kept.append(x)
        for name, value in out.items():
            results.setdefault(name, []).append(_to_float32(value))
    results['inputs'] = kept
    results['odd_input'] = any(x.shape[-2] % 32 or x.shape[-1] % 32
                               for x in kept)
    return results


# --------------------------------------------------------------------------
# the families
# --------------------------------------------------------------------------
def rmt_fixture(path: str) -> dict:
    module = load_source(path, 'official_rmt')
    config = dict(
        embed_dims=[8, 16, 24, 32],
        depths=[1, 1, 2, 1],
        num_heads=[2, 2, 3, 4],
        init_values=[2, 2, 2, 2],
        heads_ranges=[4, 4, 6, 6],
        mlp_ratios=[2, 2, 2, 2],
        chunkwise_recurrents=[True, True, False, False],
        layerscales=[False, False, True, True],
        layer_init_values=1e-6)
    extra = dict(num_classes=10, projection=16, drop_path_rate=0.)
    model = module.VisRetNet(**config, **extra).eval()
    state = randomize_state(model, SEED, keep=lambda k: '.Relpos.' in k)

    def forward(x):
        cap = Capture()
        for i in range(3):
            cap.pre(model.layers[i].downsample, f's{i}')
        cap.post(model.layers[3], 's3')
        model(x)
        cap.remove()
        return dict(stage_outputs=[
            cap.values[f's{i}'].permute(0, 3, 1, 2).contiguous()
            for i in range(4)
        ])

    return dict(
        model='RMT', official='VisRetNet', config=config,
        official_kwargs=extra, checkpoint={'model': state},
        **run_all(forward, make_inputs(SEED + 1), [model]))


def _rest_stage_hooks(model, patch_names, x):
    """Stage outputs of an official ResT (v1 or v2) classifier: the NCHW
    inputs of the patch embeddings, stage 4's tokens entering ``norm``."""
    cap = Capture()
    for i, name in enumerate(patch_names):
        cap.pre(getattr(model, name), f's{i}')
    cap.post(getattr(model, patch_names[-1]), 'last_embed')
    cap.pre(model.norm, 's3')
    cap.post(model.norm, 'normed')
    model(x)
    cap.remove()
    hw = cap.values['last_embed'][1]
    return dict(
        stage_outputs=[cap.values[f's{i}'].contiguous() for i in range(3)] +
        [tokens_to_nchw(cap.values['s3'], hw)],
        stage4_after_norm=tokens_to_nchw(cap.values['normed'], hw))


def rest_fixture(path: str) -> dict:
    module = load_source(path, 'official_rest')
    config = dict(
        embed_dims=[8, 16, 24, 32],
        num_heads=[1, 2, 3, 4],
        mlp_ratios=[2, 2, 2, 2],
        qkv_bias=True,
        depths=[1, 1, 2, 1],
        sr_ratios=[8, 4, 2, 1],
        apply_transform=True)
    extra = dict(num_classes=10, drop_path_rate=0.)
    model = module.ResT(**config, **extra).eval()
    state = randomize_state(model, SEED + 10)

    def forward(x):
        return _rest_stage_hooks(
            model, ['patch_embed_2', 'patch_embed_3', 'patch_embed_4'], x)

    return dict(
        model='ResT', official='ResT', config=config, official_kwargs=extra,
        checkpoint={'model': state},
        **run_all(forward, make_inputs(SEED + 11), [model]))


def restv2_fixture(path: str, seg_path: str) -> dict:
    module = load_source(path, 'official_restv2')
    config = dict(
        embed_dims=[8, 16, 24, 32],
        num_heads=[1, 2, 4, 4],
        depths=[1, 2, 2, 1],
        sr_ratios=[8, 4, 2, 1])
    extra = dict(num_classes=10, drop_path_rate=0.)
    model = module.ResTV2(**config, **extra).eval()
    state = randomize_state(model, SEED + 20)
    seg = None
    seg_norms = {}
    if seg_path:
        _stub_module('mmcv_runner_stand_in', BaseModule=nn.Module,
                     _load_checkpoint=None)
        _stub_module('mmseg_stand_in', get_root_logger=None,
                     BACKBONES=types.SimpleNamespace(
                         register_module=lambda *a, **k: (lambda c: c)))
        seg_module = load_source(
            seg_path, 'official_restv2_seg', replace=[
                ('from mmcv.runner import BaseModule, _load_checkpoint',
                 'from mmcv_runner_stand_in import BaseModule, '
                 '_load_checkpoint'),
                ('from mmseg.utils import get_root_logger',
                 'from mmseg_stand_in import get_root_logger'),
                ('from mmseg.models.builder import BACKBONES',
                 'from mmseg_stand_in import BACKBONES'),
            ])
        seg = seg_module.ResTV2(**config, drop_path_rate=0.).eval()
        # the classifier's weights, plus random output norms norm_{k}
        full = randomize_state(seg, SEED + 21)
        seg_norms = {k: v for k, v in full.items() if k.startswith('norm_')}
        backbone = {
            k: v
            for k, v in state.items() if not k.startswith(('norm.', 'head.'))
        }
        seg.load_state_dict({**backbone, **seg_norms})

    def forward(x):
        out = _rest_stage_hooks(model, ['patch_2', 'patch_3', 'patch_4'], x)
        if seg is not None:
            out['normed_outputs'] = [o.contiguous() for o in seg(x)]
        return out

    return dict(
        model='ResTV2', official='ResTV2', config=config,
        official_kwargs=extra, checkpoint={'model': state},
        seg_norms=seg_norms,
        **run_all(forward, make_inputs(SEED + 22),
                  [model, seg] if seg is not None else [model]))


def container_fixture(path: str) -> dict:
    module = load_source(
        path, 'official_container', replace=[('import pdb', 'pdb = None')])
    config = dict(
        img_size=[64, 16, 8, 4],
        patch_size=[4, 2, 2, 2],
        embed_dim=[8, 16, 24, 32],
        depth=[1, 1, 1, 2],
        num_heads=4,
        mlp_ratio=[2, 2, 2, 2],
        qkv_bias=True)
    extra = dict(num_classes=10, drop_path_rate=0.)
    from functools import partial
    model = module.VisionTransformer(
        **config, norm_layer=partial(nn.LayerNorm, eps=1e-6),
        **extra).eval()
    state = randomize_state(model, SEED + 30)

    def forward(x):
        cap = Capture()
        for i, name in enumerate(
            ['patch_embed2', 'patch_embed3', 'patch_embed4']):
            cap.pre(getattr(model, name), f's{i}')
        cap.pre(model.norm, 's3')
        cap.post(model.norm, 'normed')
        model(x)
        cap.remove()
        return dict(
            stage_outputs=[cap.values[f's{i}'].contiguous()
                           for i in range(4)],
            stage4_after_norm=cap.values['normed'].contiguous())

    return dict(
        model='ContainerLight', official='VisionTransformer (Container '
        'light, norm_layer LayerNorm eps 1e-6)', config=config,
        official_kwargs=extra, checkpoint={'model': state},
        **run_all(forward, make_inputs(SEED + 31, [(1, 3, 64, 64)]), [model]))


def riformer_fixture(mmpretrain_dir: str) -> dict:
    from mmengine.registry import Registry
    _stub_module('mmpretrain_registry_stand_in',
                 MODELS=Registry('parity_fixture_models'))
    backbones = osp.join(mmpretrain_dir, 'models', 'backbones')
    fix = [('from mmpretrain.registry import MODELS',
            'from mmpretrain_registry_stand_in import MODELS'),
           ('from .base_backbone import BaseBackbone',
            'from mmp_base_backbone import BaseBackbone')]
    sys.modules['mmp_base_backbone'] = load_source(
        osp.join(backbones, 'base_backbone.py'), 'mmp_base_backbone')
    sys.modules['mmp_poolformer'] = load_source(
        osp.join(backbones, 'poolformer.py'), 'mmp_poolformer', replace=fix)
    module = load_source(
        osp.join(backbones, 'riformer.py'), 'mmp_riformer',
        replace=fix + [('from .poolformer import',
                        'from mmp_poolformer import')])
    config = dict(
        layers=[1, 1, 2, 1],
        embed_dims=[8, 16, 24, 32],
        mlp_ratios=[2, 2, 2, 2],
        layer_scale_init_value=1e-5)
    extra = dict(out_indices=[0, 2, 4, 6])
    model = module.RIFormer(arch=dict(config), **extra).eval()
    state = randomize_state(model, SEED + 40)

    def forward(x):
        return dict(normed_outputs=[o.contiguous() for o in model(x)])

    return dict(
        model='RIFormer', official='RIFormer (mmpretrain)', config=config,
        official_kwargs=extra,
        checkpoint={'state_dict': {f'backbone.{k}': v
                                   for k, v in state.items()}},
        **run_all(forward, make_inputs(SEED + 41), [model]))


#: the files of open-mmlab/mmpretrain's package folder this script reads
MMPRETRAIN_FILES = ('models/backbones/riformer.py',
                    'models/backbones/poolformer.py')


def check_args(args) -> Dict[str, tuple]:
    """The fixtures to write, ``{family: (function, paths, sources)}``,
    after checking every given source and the output folder."""
    for option in ('rmt', 'rest', 'restv2', 'restv2_seg', 'container'):
        if getattr(args, option):
            cli.existing_file('--' + option.replace('_', '-'),
                              getattr(args, option), ('.py', ))
    if args.restv2_seg and not args.restv2:
        raise ToolError('--restv2-seg goes with --restv2 (the ResT v2 '
                        'classifier, models/rest_v2.py)')
    if args.mmpretrain:
        cli.existing_dir('--mmpretrain', args.mmpretrain, MMPRETRAIN_FILES)
    jobs = {
        'rmt': (rmt_fixture, [args.rmt], [('qhfan/RMT', args.rmt)]),
        'rest': (rest_fixture, [args.rest],
                 [('wofmanaf/ResT', args.rest)]),
        'restv2': (restv2_fixture, [args.restv2, args.restv2_seg],
                   [('wofmanaf/ResT', args.restv2),
                    ('wofmanaf/ResT', args.restv2_seg)]),
        'container': (container_fixture, [args.container],
                      [('allenai/container', args.container)]),
        'riformer': (riformer_fixture, [args.mmpretrain], [
            ('open-mmlab/mmpretrain', osp.join(args.mmpretrain, p))
            for p in MMPRETRAIN_FILES
        ] if args.mmpretrain else []),
    }
    jobs = {k: v for k, v in jobs.items() if v[1][0]}
    if not jobs:
        raise ToolError('nothing to write: give the official source of at '
                        'least one family (--rmt, --rest, --restv2, '
                        '--container, --mmpretrain)')
    out = cli.output_dir('--out', args.out)
    for name in jobs:
        cli.output_file('--out', out / f'{name}.pt')
    return jobs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rmt', help='qhfan/RMT classfication_release/'
                        'RMT.py')
    parser.add_argument('--rest', help='wofmanaf/ResT models/rest.py')
    parser.add_argument('--restv2', help='wofmanaf/ResT models/rest_v2.py')
    parser.add_argument('--restv2-seg', help='wofmanaf/ResT '
                        'semantic_segmentation/backbone/rest_v2.py')
    parser.add_argument('--container', help='allenai/container models.py')
    parser.add_argument('--mmpretrain', help='the mmpretrain package '
                        'folder (open-mmlab/mmpretrain mmpretrain/)')
    parser.add_argument('--out', default='tests/data/parity')
    args = parser.parse_args(argv)
    jobs = check_args(args)
    torch.set_num_threads(1)  # deterministic reductions
    fixtures = {}
    for name, (fn, paths, sources) in jobs.items():
        print(f'{name}:')
        fixture = fn(*paths)
        fixture['source'] = [
            dict(repo=repo, file=osp.basename(p), sha256=sha256(p))
            for repo, p in sources if p
        ]
        with tempfile.TemporaryDirectory() as tmp:  # the archive is named
            path = osp.join(tmp, f'{name}.pt')    # after the file
            torch.save(fixture, path)
            with open(path, 'rb') as f:
                data = f.read()
        fixtures[name] = (data, [tuple(x.shape) for x in fixture['inputs']])
    # written only when every family succeeded, each file whole
    for name, (data, shapes) in fixtures.items():
        out = osp.join(args.out, f'{name}.pt')
        cli.write_file(out, data)
        print(f'  {out}: {len(data) / 1024:.0f} KiB, inputs {shapes}')


if __name__ == '__main__':
    run(main)
