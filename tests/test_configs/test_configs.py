"""Every config under ``configs/`` builds, trains one step and predicts.

The test is parametrised over every ``*.py`` below ``configs/`` (``_base_``
folders excepted), so configs added later are covered without editing this
file. For each config, on CPU:

1. ``Config.fromfile``, import its ``custom_imports``, register the modules of
   its ``default_scope`` (mmdet, mmseg or mmpretrain) and make it the default
   scope;
2. check every ``Pretrained`` ``init_cfg`` in the model points under
   ``checkpoints/`` (required on the backbone of detection and segmentation
   configs outside ``configs/demo``), then drop it: the files are not here;
3. build every transform of every pipeline, and run the train and test
   pipelines on a small synthetic image (and annotation) written to disk;
4. build the model (real size) and the optimiser wrapper from the config's
   ``optim_wrapper`` (paramwise settings included), run one
   ``model.train_step`` on two tiny images and check that the losses are
   finite, every trainable backbone parameter gets a gradient, and (nearly)
   every parameter with a non-zero gradient changed, in the backbone and
   outside it;
5. run ``model.test_step`` and check the type and shape of the predictions.

Two CPU-only substitutions, both on the copy under test:
``AmpOptimWrapper`` needs CUDA to be built, so its arguments are checked
against its signature and an ``OptimWrapper`` with the same optimiser and
paramwise settings runs the step (autocast and loss scaling are not
exercised); a segmentation data preprocessor that pads to the training crop
size pads to the tiny test size instead. To keep full-size detectors fast,
RoI sampling and proposal counts are capped (``DET_CAPS``); no layer of the
model changes size.
"""
import copy
import importlib
import inspect
import math
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.optim import AmpOptimWrapper, build_optim_wrapper
from mmengine.registry import MODELS, TRANSFORMS, init_default_scope
from mmengine.utils import import_modules_from_strings

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_ROOT = REPO_ROOT / 'configs'

#: default_scope -> module whose ``register_all_modules`` registers it
SCOPE_MODULES = {
    'mmdet': 'mmdet.utils',
    'mmseg': 'mmseg.utils',
    'mmpretrain': 'mmpretrain.utils',
}
#: (height, width) of the two images of the train / test step; mmseg and
#: mmpretrain preprocessors stack test batches without padding: one size
IMAGE_SHAPES = {
    'mmdet': [(64, 96), (64, 64)],
    'mmseg': [(64, 96), (64, 96)],
    'mmpretrain': [(64, 96), (64, 96)],
}


def collect_configs():
    """Every ``*.py`` under ``configs/`` outside ``_base_`` folders."""
    return sorted(
        path for path in CONFIG_ROOT.rglob('*.py')
        if '_base_' not in path.relative_to(CONFIG_ROOT).parts)


CONFIGS = collect_configs()


def config_id(path: Path) -> str:
    return str(path.relative_to(CONFIG_ROOT))


# --------------------------------------------------------------------------
# config loading
# --------------------------------------------------------------------------


def load_config(path: Path) -> Config:
    cfg = Config.fromfile(str(path))
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    scope = cfg.get('default_scope')
    if scope not in SCOPE_MODULES:
        raise AssertionError(
            f'{config_id(path)}: default_scope is {scope!r}; this test knows '
            f'{sorted(SCOPE_MODULES)}')
    importlib.import_module(SCOPE_MODULES[scope]).register_all_modules(
        init_default_scope=False)
    init_default_scope(scope)
    return cfg


def find_pretrained(node, where='model'):
    """Yield (location, parent dict) of every Pretrained ``init_cfg``."""
    if isinstance(node, dict):
        init_cfg = node.get('init_cfg')
        candidates = init_cfg if isinstance(init_cfg, list) else [init_cfg]
        for item in candidates:
            if isinstance(item, dict) and item.get('type') == 'Pretrained':
                yield where, node
                break
        for key, value in node.items():
            if key != 'init_cfg':
                yield from find_pretrained(value, f'{where}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from find_pretrained(value, f'{where}[{i}]')


def check_and_drop_pretrained(cfg: Config, path: Path) -> None:
    """Pretrained files point under checkpoints/; drop them for the build."""
    rel = path.relative_to(CONFIG_ROOT)
    found = list(find_pretrained(cfg.model))
    for where, node in found:
        init_cfgs = node['init_cfg']
        init_cfgs = init_cfgs if isinstance(init_cfgs, list) else [init_cfgs]
        kept = []
        for item in init_cfgs:
            if isinstance(item, dict) and item.get('type') == 'Pretrained':
                checkpoint = item.get('checkpoint')
                assert isinstance(checkpoint, str) and checkpoint.startswith(
                    'checkpoints/'), (
                        f'{rel}: {where}.init_cfg checkpoint {checkpoint!r} '
                        'must be a path under checkpoints/')
            else:
                kept.append(item)
        node['init_cfg'] = kept if len(kept) > 1 else (kept[0]
                                                         if kept else None)
    # a distiller's teacher weights (RIFormerDistiller): a file under
    # checkpoints/, or for the demo the teacher demo's work_dirs/ output
    teacher_ckpt = cfg.model.get('teacher_ckpt')
    if teacher_ckpt is not None:
        allowed = ('checkpoints/', 'work_dirs/') if rel.parts[0] == 'demo' \
            else ('checkpoints/', )
        assert isinstance(teacher_ckpt, str) and teacher_ckpt.startswith(
            allowed), (f'{rel}: model.teacher_ckpt {teacher_ckpt!r} must be '
                       f'a path under {" or ".join(allowed)}')
        cfg.model.teacher_ckpt = None
    downstream = cfg.default_scope in ('mmdet', 'mmseg')
    if downstream and rel.parts[0] != 'demo':
        assert 'model.backbone' in [where for where, _ in found], (
            f'{rel}: the backbone of a detection / segmentation config must '
            'load ImageNet weights through init_cfg=dict(type="Pretrained", '
            'checkpoint="checkpoints/...")')


def shrink_seg_preprocessor(cfg: Config) -> None:
    """Pad to the tiny test images instead of the training crop size."""
    preprocessor = cfg.model.get('data_preprocessor')
    if cfg.default_scope == 'mmseg' and preprocessor is not None and \
            preprocessor.get('size') is not None:
        shapes = IMAGE_SHAPES['mmseg']
        preprocessor['size'] = (max(h for h, _ in shapes),
                                max(w for _, w in shapes))


#: caps on detector sampling / proposal counts for the CPU step
DET_CAPS = dict(num=64, nms_pre=200, max_per_img=50)


def shrink_det_sampling(cfg: Config) -> None:
    """Cap RoI sampling and proposal counts (the heads' size is unchanged)."""

    def visit(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in DET_CAPS and isinstance(value, int):
                    node[key] = min(value, DET_CAPS[key])
                else:
                    visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)

    if cfg.default_scope == 'mmdet':
        for key in ('train_cfg', 'test_cfg'):
            visit(cfg.model.get(key))


def num_classes_of(cfg: Config) -> int:
    """Smallest ``num_classes`` found in the model config (heads agree)."""
    found = []

    def visit(node):
        if isinstance(node, dict):
            if isinstance(node.get('num_classes'), int):
                found.append(node['num_classes'])
            for value in node.values():
                visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)

    visit(cfg.model)
    assert found, 'no num_classes in the model config'
    return min(found)


# --------------------------------------------------------------------------
# pipelines
# --------------------------------------------------------------------------


def collect_pipelines(cfg: Config) -> dict:
    """name -> pipeline list of the config's datasets and *_pipeline keys."""
    pipelines = {}
    for key in ('train_pipeline', 'val_pipeline', 'test_pipeline',
                'tta_pipeline'):
        if isinstance(cfg.get(key), list):
            pipelines[key] = cfg[key]

    def visit(node, where):
        if isinstance(node, dict):
            if isinstance(node.get('pipeline'), list):
                pipelines[where + '.pipeline'] = node['pipeline']
            for key in ('dataset', 'datasets'):
                if key in node:
                    visit(node[key], f'{where}.{key}')
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                visit(value, f'{where}[{i}]')

    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if isinstance(cfg.get(key), dict):
            visit(cfg[key].get('dataset'), f'{key}.dataset')
    return pipelines


def dataloader_pipeline(cfg: Config, split: str):
    """The pipeline of ``{split}_dataloader`` (wrappers unwrapped)."""
    node = cfg.get(f'{split}_dataloader', {}).get('dataset')
    while isinstance(node, dict) and 'pipeline' not in node:
        node = node.get('dataset') or (node.get('datasets') or [None])[0]
    return None if node is None else node['pipeline']


@pytest.fixture(scope='module', autouse=True)
def one_intra_op_thread():
    """Tiny tensors: one thread avoids OpenMP spin-waits, which on shared
    cores cost far more than the work of a tiny Mask R-CNN step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def sample_files(tmp_path_factory):
    """A 120x160 RGB image and a matching ADE-style label map on disk."""
    root = tmp_path_factory.mktemp('config_samples')
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    label = rng.integers(0, 151, (120, 160), dtype=np.uint8)
    img_path, seg_path = root / 'image.jpg', root / 'label.png'
    mmcv.imwrite(image, str(img_path))
    mmcv.imwrite(label, str(seg_path))
    return dict(img=str(img_path), seg=str(seg_path))


def raw_sample(scope: str, files: dict) -> dict:
    """What the scope's dataset hands to the first transform."""
    if scope == 'mmdet':
        box = [20., 15., 110., 90.]
        polygon = [20., 15., 110., 15., 110., 90., 20., 90.]
        return dict(
            img_path=files['img'],
            img_id=0,
            height=120,
            width=160,
            instances=[
                dict(
                    bbox=box, bbox_label=3, ignore_flag=0, mask=[polygon])
            ])
    if scope == 'mmseg':
        return dict(
            img_path=files['img'],
            seg_map_path=files['seg'],
            label_map=None,
            reduce_zero_label=True,
            seg_fields=[])
    return dict(img_path=files['img'], gt_label=3)


def check_packed(scope: str, packed: dict, where: str) -> None:
    assert set(packed) >= {'inputs', 'data_samples'}, (
        f'{where}: the pipeline output has keys {sorted(packed)}')
    inputs = packed['inputs']
    shape = tuple(getattr(inputs, 'shape', ()))
    assert isinstance(inputs, torch.Tensor) and len(shape) == 3 and \
        shape[0] == 3, f'{where}: inputs of shape {shape}, expected (3, H, W)'
    sample = packed['data_samples']
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        assert isinstance(sample, DetDataSample)
    elif scope == 'mmseg':
        from mmseg.structures import SegDataSample
        assert isinstance(sample, SegDataSample)
    else:
        from mmpretrain.structures import DataSample
        assert isinstance(sample, DataSample)
        assert sample.gt_label.tolist() == [3]


# --------------------------------------------------------------------------
# model inputs and predictions
# --------------------------------------------------------------------------


def make_batch(scope: str, num_classes: int, with_mask: bool) -> dict:
    """Two small images with annotations for ``train_step``/``test_step``."""
    torch.manual_seed(0)
    shapes = IMAGE_SHAPES[scope]
    if scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        return demo_mm_inputs(
            batch_size=len(shapes),
            image_shapes=[(3, h, w) for h, w in shapes],
            num_items=[3, 2],
            num_classes=num_classes,
            with_mask=with_mask)
    inputs, samples = [], []
    for i, (h, w) in enumerate(shapes):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
        meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                    scale_factor=(1.0, 1.0), flip=False)
        if scope == 'mmseg':
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=meta)
            sample.gt_sem_seg = PixelData(
                data=torch.randint(0, num_classes, (1, h, w)))
        else:
            from mmpretrain.structures import DataSample
            sample = DataSample(metainfo=meta).set_gt_label(i % num_classes)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def check_predictions(scope: str, preds, num_classes: int, with_mask: bool,
                      test_cfg) -> None:
    shapes = IMAGE_SHAPES[scope]
    assert isinstance(preds, list) and len(preds) == len(shapes), (
        f'test_step returned {type(preds).__name__} of '
        f'{len(preds) if isinstance(preds, list) else "?"} items')
    for pred, (h, w) in zip(preds, shapes):
        if scope == 'mmdet':
            from mmdet.structures import DetDataSample
            assert isinstance(pred, DetDataSample)
            inst = pred.pred_instances
            n = len(inst)
            assert inst.bboxes.shape == (n, 4)
            assert inst.scores.shape == (n, ) and inst.labels.shape == (n, )
            max_per_img = _find_key(test_cfg, 'max_per_img')
            if max_per_img is not None:
                assert n <= max_per_img
            if n:
                assert torch.isfinite(inst.bboxes).all()
                assert ((inst.scores >= 0) & (inst.scores <= 1)).all()
                assert ((inst.labels >= 0) &
                        (inst.labels < num_classes)).all()
            if with_mask:
                assert tuple(inst.masks.shape) == (n, h, w)
        elif scope == 'mmseg':
            from mmseg.structures import SegDataSample
            assert isinstance(pred, SegDataSample)
            seg = pred.pred_sem_seg.data
            assert tuple(seg.shape) == (1, h, w)
            assert ((seg >= 0) & (seg < num_classes)).all()
            logits = pred.seg_logits.data
            assert tuple(logits.shape) == (num_classes, h, w)
            assert torch.isfinite(logits).all()
        else:
            from mmpretrain.structures import DataSample
            assert isinstance(pred, DataSample)
            score = pred.pred_score
            assert tuple(score.shape) == (num_classes, )
            assert torch.isfinite(score).all()
            assert pred.pred_label.shape == (1, )
            assert 0 <= int(pred.pred_label) < num_classes


def _find_key(node, key):
    if isinstance(node, dict):
        if key in node:
            return node[key]
        for value in node.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


def build_cpu_optim_wrapper(model, cfg: Config):
    """The config's optim wrapper; AmpOptimWrapper checked, then replaced."""
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    if optim_cfg.get('type') == 'AmpOptimWrapper':
        accepted = set(inspect.signature(AmpOptimWrapper.__init__).parameters)
        accepted |= set(inspect.signature(
            AmpOptimWrapper.__mro__[1].__init__).parameters)
        wrapper_keys = set(optim_cfg) - {'type', 'constructor',
                                         'paramwise_cfg', 'optimizer'}
        unknown = sorted(wrapper_keys - accepted)
        assert not unknown, f'AmpOptimWrapper does not accept {unknown}'
        loss_scale = optim_cfg.pop('loss_scale', 'dynamic')
        assert loss_scale == 'dynamic' or isinstance(
            loss_scale, (int, float, dict)), f'loss_scale {loss_scale!r}'
        for key in ('dtype', 'use_fsdp'):
            optim_cfg.pop(key, None)
        optim_cfg['type'] = 'OptimWrapper'
    return build_optim_wrapper(model, optim_cfg)


# --------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------


def test_configs_found():
    names = {config_id(p) for p in CONFIGS}
    expected = {
        f'rmt/{name}.py'
        for name in [
            *(f'retinanet_rmt_{a}_1x' for a in 'tsbl'),
            *(f'maskrcnn_rmt_{a}_1x' for a in 'tsbl'),
            'maskrcnn_rmt_s_3x', 'maskrcnn_rmt_b_3x',
            'cascade_maskrcnn_rmt_s_3x', 'cascade_maskrcnn_rmt_b_3x',
            *(f'rmt_{a}_in1k_cls' for a in 'tsbl'),
            *(f'fpn_rmt_{a}_80k_ade20k' for a in 'tsbl'),
            *(f'upernet_rmt_{a}_160k_ade20k' for a in 'sbl'),
        ]
    }
    missing = sorted(expected - names)
    assert not missing, f'configs missing: {missing}'


@pytest.mark.slow  # every pipeline of every config (minutes)
@pytest.mark.parametrize('path', CONFIGS, ids=config_id)
def test_config_pipelines(path, sample_files):
    cfg = load_config(path)
    scope = cfg.default_scope
    pipelines = collect_pipelines(cfg)
    assert pipelines, f'{config_id(path)}: no data pipeline found'
    for where, pipeline in pipelines.items():
        for transform in pipeline:
            built = TRANSFORMS.build(copy.deepcopy(transform))
            assert callable(built), f'{where}: {transform} is not callable'
    for split in ('train', 'test'):
        pipeline = dataloader_pipeline(cfg, split)
        if pipeline is None:
            continue
        for seed in range(3):  # a few draws of the random transforms
            np.random.seed(seed)
            torch.manual_seed(seed)
            packed = Compose(copy.deepcopy(pipeline))(
                raw_sample(scope, sample_files))
            assert packed is not None, (
                f'{split} pipeline dropped the sample (seed {seed})')
            check_packed(scope, packed, f'{split} pipeline')


@pytest.mark.slow  # full-size models, one per config
@pytest.mark.parametrize('path', CONFIGS, ids=config_id)
def test_config_train_and_test_step(path):
    cfg = load_config(path)
    scope = cfg.default_scope
    check_and_drop_pretrained(cfg, path)
    shrink_seg_preprocessor(cfg)
    shrink_det_sampling(cfg)
    num_classes = num_classes_of(cfg)

    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    with_mask = scope == 'mmdet' and bool(getattr(model, 'with_mask', False))
    optim_wrapper = build_cpu_optim_wrapper(model, cfg)

    backbone = getattr(model, 'backbone', None)
    assert backbone is not None, f'{config_id(path)}: model has no backbone'
    backbone_ids = {id(p) for p in backbone.parameters()}
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert params, 'no trainable parameter'
    before = {n: p.detach().clone() for n, p in params.items()}
    nonzero_grad = {}

    def record(name):

        def hook(param):
            nonzero_grad[name] = bool(param.grad.abs().max() > 0)

        return hook

    handles = [
        p.register_post_accumulate_grad_hook(record(n))
        for n, p in params.items()
    ]
    data = make_batch(scope, num_classes, with_mask)
    log_vars = model.train_step(data, optim_wrapper)
    for handle in handles:
        handle.remove()

    assert 'loss' in log_vars, f'train_step returned {sorted(log_vars)}'
    for key, value in log_vars.items():
        value = float(value)
        assert math.isfinite(value), f'{key} = {value}'

    no_grad = sorted(n for n, p in params.items()
                     if id(p) in backbone_ids and n not in nonzero_grad)
    assert not no_grad, f'trainable backbone params without grad: {no_grad}'
    moved = {
        n
        for n, p in params.items() if not torch.equal(p.detach(), before[n])
    }
    del before
    # A gradient far below the optimiser's resolution may legitimately leave
    # a parameter unchanged (e.g. norms behind a 1e-6 layer scale with Adam's
    # eps 1e-8), so require nearly all, per part, rather than every one.
    for part, in_backbone in (('backbone', True), ('neck / heads', False)):
        updated = [
            n for n, nonzero in nonzero_grad.items()
            if nonzero and (id(params[n]) in backbone_ids) == in_backbone
        ]
        assert updated, f'no {part} parameter received a non-zero gradient'
        stuck = sorted(n for n in updated if n not in moved)
        assert len(stuck) <= 0.1 * len(updated), (
            f'{len(stuck)} of {len(updated)} {part} parameters with a '
            f'non-zero gradient did not change: {stuck[:20]}')

    model.eval()
    with torch.no_grad():
        preds = model.test_step(make_batch(scope, num_classes, with_mask))
    check_predictions(scope, preds, num_classes, with_mask,
                      cfg.model.get('test_cfg'))


# --------------------------------------------------------------------------
# mixed precision on the CPU: the AmpOptimWrapper as configured
# --------------------------------------------------------------------------
#: one config per family; the first, second and fourth configure
#: AmpOptimWrapper themselves (dynamic / static loss scale), the others get
#: it from ``tools/train.py --amp``
AMP_CONFIGS = [
    'rmt/retinanet_rmt_t_1x.py',
    'rmt/maskrcnn_rmt_s_3x.py',
    'rmt/fpn_rmt_t_80k_ade20k.py',
    'rmt/upernet_rmt_s_160k_ade20k.py',
    'riformer/riformer_s12_in1k_cls.py',
]


@pytest.mark.slow  # full-size models, one per config
@pytest.mark.parametrize('name', AMP_CONFIGS)
def test_config_amp_train_step_on_cpu(name, monkeypatch, tmp_path):
    """``--amp`` on a machine without a GPU: the config's AmpOptimWrapper is
    built as configured (not replaced), the step runs under bfloat16
    autocast, losses are finite and the weights move."""
    import argparse

    from mmengine.optim.optimizer import amp_optimizer_wrapper

    from mmvitmix.apis import enable_cpu_amp
    from tests.utils import load_script
    apply_train_args = load_script('tools/train.py').apply_train_args
    if torch.cuda.is_available():
        pytest.skip('checks the CPU path of AmpOptimWrapper')
    # enable_cpu_amp relaxes a module global of mmengine: restore it after
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available',
                        amp_optimizer_wrapper.is_cuda_available)

    path = CONFIG_ROOT / name
    cfg = load_config(path)
    configured = copy.deepcopy(cfg.optim_wrapper)
    apply_train_args(
        cfg,
        argparse.Namespace(
            work_dir=str(tmp_path), config=str(path), amp=True,
            auto_scale_lr=False, resume=None))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    if configured.get('type') == 'AmpOptimWrapper':
        assert cfg.optim_wrapper == configured, 'the config was changed'
    assert enable_cpu_amp(cfg)

    scope = cfg.default_scope
    check_and_drop_pretrained(cfg, path)
    shrink_seg_preprocessor(cfg)
    shrink_det_sampling(cfg)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert type(optim_wrapper) is AmpOptimWrapper
    if 'loss_scale' in configured:
        assert not optim_wrapper.loss_scaler.is_enabled()

    dtypes = []
    conv = next(m for m in model.backbone.modules()
                if isinstance(m, torch.nn.Conv2d))
    handle = conv.register_forward_hook(
        lambda mod, inp, out: dtypes.append(out.dtype))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with_mask = scope == 'mmdet' and bool(getattr(model, 'with_mask', False))
    log_vars = model.train_step(
        make_batch(scope, num_classes_of(cfg), with_mask), optim_wrapper)
    handle.remove()
    assert dtypes and dtypes[0] == torch.bfloat16, dtypes
    for key, value in log_vars.items():
        assert math.isfinite(float(value)), f'{key} = {value}'
    moved = [
        n for n, p in model.named_parameters()
        if not torch.equal(p.detach(), before[n])
    ]
    assert len(moved) > 0.5 * len(before), (
        f'only {len(moved)} of {len(before)} parameters changed')
