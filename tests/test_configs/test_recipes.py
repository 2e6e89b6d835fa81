"""Every config's training recipe against ``configs/<backbone>/recipes.yml``.

Each ``recipes.yml`` records, per config, where its recipe comes from
(official repository, files, commit; or the protocol it borrows, or "own")
and the values that define it. This test resolves each listed config and
compares it with its record:

- the optimiser the wrapper actually builds on the model: the model is
  built at its real size on the meta device (real parameter names and
  shapes, no memory), the config's ``optim_wrapper`` is built on it and the
  learning rate and weight decay of *every parameter* in the optimiser's
  groups are compared with the record's rules (``weight_decay_rules`` /
  ``lr_rules``: first match wins, on the parameter name, the rank of its
  tensor and whether its module is a norm layer). Rules describe the
  official training code, e.g. timm's ``ndim <= 1`` exemption, so a tensor
  whose rank differs from the official one shows up here;
- for ImageNet configs with an official checkpoint, the number of elements
  with and without weight decay, computed from the official checkpoint's
  shapes by the official rule (``official_numel``), against the optimiser's;
- optimiser type, lr, betas, eps, base weight decay, gradient clipping,
  mixed precision, wrapper type;
- the lr schedule (``param_scheduler``, epochs / iterations, validation
  interval), the batch (images per GPU x GPUs = ``auto_scale_lr`` base and
  the metafile's ``Batch Size`` / ``Training Resources``);
- train and test pipelines and input normalisation;
- backbone / neck / head settings named in the record (drop path, layer
  scale, frozen stages, norm_eval, ...), EMA and checkpoint hooks.

A difference fails with one line per field naming it, the recorded value
and the config's; ``test_mutated_config_is_rejected`` shows it on a mutated
copy of a config.
"""
import copy
import importlib
import logging
import math
import re
from functools import lru_cache
from pathlib import Path

import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope
from mmengine.utils import import_modules_from_strings
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_ROOT = REPO_ROOT / 'configs'
SCOPE_MODULES = {
    'mmdet': 'mmdet.utils',
    'mmseg': 'mmseg.utils',
    'mmpretrain': 'mmpretrain.utils',
}
#: the kinds of recipe a record may declare (docs/model_zoo.md uses them)
KINDS = ('official', 'official-with-deviations', 'own')
#: record keys and what they are compared with
RECORD_KEYS = {
    'kind', 'source', 'deviations', 'gpus', 'batch_per_gpu', 'optimizer',
    'optim_wrapper', 'weight_decay_rules', 'lr_rules', 'official_numel',
    'schedule', 'pipeline', 'model', 'hooks', 'note'
}
#: norm layers as mmengine / mmcv / detectron2 see them
NORM_TYPES = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)
#: pipeline keys that are about file access, not the recipe
PIPELINE_NOISE = ('backend_args', )


# --------------------------------------------------------------------------
# the tables
# --------------------------------------------------------------------------


def load_tables():
    """config path -> (record, the recipes.yml it is in, its shared tables)"""
    records = {}
    for path in sorted(CONFIG_ROOT.glob('*/recipes.yml')):
        table = yaml.safe_load(path.read_text())
        unknown = set(table) - {
            'sources', 'weight_decay_rules', 'schedules', 'pipelines',
            'recipes'
        }
        assert not unknown, f'{path}: unknown top-level keys {unknown}'
        for name, record in table['recipes'].items():
            config = f'configs/{path.parent.name}/{name}.py'
            records[config] = (record, path, table)
    return records


TABLES = load_tables()


def resolve(table, section, value):
    """A record field given as the name of a shared entry, or inline."""
    if isinstance(value, str):
        assert value in table.get(section, {}), (
            f'{section}: no entry named {value!r}')
        return table[section][value]
    return value


# --------------------------------------------------------------------------
# loading and building
# --------------------------------------------------------------------------


def load_config(config) -> Config:
    cfg = Config.fromfile(str(REPO_ROOT / config))
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    scope = cfg.get('default_scope')
    importlib.import_module(SCOPE_MODULES[scope]).register_all_modules(
        init_default_scope=False)
    init_default_scope(scope)
    return cfg


def strip_pretrained(node):
    """Drop Pretrained init_cfgs: the files are not here, nothing is
    initialised on the meta device anyway."""
    if isinstance(node, dict):
        init_cfg = node.get('init_cfg')
        items = init_cfg if isinstance(init_cfg, list) else [init_cfg]
        if any(isinstance(i, dict) and i.get('type') == 'Pretrained'
               for i in items):
            node['init_cfg'] = None
        for key, value in node.items():
            if key != 'init_cfg':
                strip_pretrained(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            strip_pretrained(value)


@lru_cache(maxsize=4)
def _build_model(model_cfg_text: str, scope: str):
    model_cfg = Config.fromstring(model_cfg_text, '.py')['model']
    init_default_scope(scope)
    with torch.device('meta'):
        return MODELS.build(model_cfg)


def build_model(cfg: Config):
    model_cfg = copy.deepcopy(cfg.model)
    strip_pretrained(model_cfg)
    if 'teacher' in model_cfg:
        # RIFormerDistiller keeps its frozen teacher out of the module tree
        # (never optimised: tests/test_models/test_riformer_distiller.py), so
        # the optimiser's groups are the student classifier's
        model_cfg = dict(
            type='ImageClassifier',
            **{k: model_cfg[k]
               for k in ('backbone', 'neck', 'head', 'data_preprocessor',
                         'train_cfg', 'init_cfg') if k in model_cfg})
    # SyncBN needs no process group to be built, only to run
    text = Config(dict(model=model_cfg)).pretty_text
    return _build_model(text, cfg.default_scope)


def build_optimizer(model, cfg: Config):
    """The config's optimiser; AmpOptimWrapper (CUDA only) becomes an
    OptimWrapper with the same optimiser and paramwise settings: the
    parameter groups are the constructor's, not the wrapper's."""
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    if optim_cfg.get('type') == 'AmpOptimWrapper':
        optim_cfg['type'] = 'OptimWrapper'
        for key in ('loss_scale', 'dtype', 'use_fsdp'):
            optim_cfg.pop(key, None)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # one INFO line per parameter otherwise
    try:
        return build_optim_wrapper(model, optim_cfg).optimizer
    finally:
        logger.setLevel(level)


# --------------------------------------------------------------------------
# comparisons
# --------------------------------------------------------------------------


def normalise(value):
    """Tuples -> lists, ints stay ints, floats rounded to 12 significant
    digits (a config's 5e-4 * 2048 / 512 equals the record's 2.0e-3)."""
    if isinstance(value, dict):
        return {
            k: normalise(v)
            for k, v in value.items() if k != '_scope_'
        }
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, float):
        return float(f'{value:.12g}')
    return value


def same(a, b) -> bool:
    return normalise(a) == normalise(b)


def get_path(node, path):
    """``node['a']['b'][0]`` for path 'a.b.0'; KeyError names the path."""
    for part in path.split('.'):
        if isinstance(node, (list, tuple)):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(path)
    return node


def compare_subset(errors, field, expected, actual):
    """Every key of ``expected`` (nested dicts) has the same value."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key, value in expected.items():
            if key not in actual:
                if value is not None:
                    errors.append(f'{field}.{key}: recorded {value!r}, '
                                  'config has none')
                continue
            compare_subset(errors, f'{field}.{key}', value, actual[key])
    elif isinstance(expected, list) and isinstance(actual, (list, tuple)) \
            and len(expected) == len(actual) and all(
                isinstance(e, dict) for e in expected):
        for i, (e, a) in enumerate(zip(expected, actual)):
            compare_subset(errors, f'{field}.{i}', e, a)
    elif not same(expected, actual):
        errors.append(f'{field}: recorded {normalise(expected)!r}, config '
                      f'has {normalise(actual)!r}')


def clean_pipeline(pipeline):
    out = []
    for step in pipeline:
        step = {k: v for k, v in step.items() if k not in PIPELINE_NOISE}
        for key in ('transforms', ):
            if key in step:
                step[key] = [
                    clean_pipeline(t) if isinstance(t, list) else
                    clean_pipeline([t])[0] for t in step[key]
                ]
        out.append(step)
    return normalise(out)


def dataloader_pipeline(cfg, split):
    node = cfg.get(f'{split}_dataloader', {}).get('dataset')
    while isinstance(node, dict) and 'pipeline' not in node:
        node = node.get('dataset')
    return node['pipeline']


def rule_matches(rule, name, param, module) -> bool:
    if 'name' in rule and not re.search(rule['name'], name):
        return False
    if 'ndim_max' in rule and param.ndim > rule['ndim_max']:
        return False
    if 'norm' in rule and isinstance(module, NORM_TYPES) != rule['norm']:
        return False
    return True


def expected_value(rules, name, param, module, default, key):
    for rule in rules:
        if rule_matches(rule, name, param, module):
            return rule[key], rule
    return default, None


def check_param_groups(errors, record, table, model, optimizer, base):
    """lr and weight decay of every parameter against the rules."""
    wd_rules = resolve(table, 'weight_decay_rules',
                       record.get('weight_decay_rules', []))
    lr_rules = record.get('lr_rules', [])
    modules = dict(model.named_modules())
    held = {}
    for group in optimizer.param_groups:
        for p in group['params']:
            held[id(p)] = (group['lr'], group['weight_decay'])
    mismatches = {}
    numel = {'decay': 0, 'no_decay': 0}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) not in held:
            errors.append(f'param_groups: {name} is not in the optimiser')
            continue
        lr, wd = held[id(param)]
        module = modules[name.rpartition('.')[0]]
        exp_wd, _ = expected_value(wd_rules, name, param, module,
                                   base['weight_decay'], 'decay')
        mult, _ = expected_value(lr_rules, name, param, module, 1.0,
                                 'lr_mult')
        exp = normalise((base['lr'] * mult, exp_wd))
        got = normalise((lr, wd))
        if exp != got:
            key = (tuple(exp), tuple(got))
            mismatches.setdefault(key, []).append(name)
        numel['decay' if wd > 0 else 'no_decay'] += param.numel()
    for (exp, got), where in sorted(mismatches.items()):
        errors.append(
            f'param_groups (lr, weight_decay): recorded {exp}, optimiser '
            f'holds {got} for {len(where)} parameter(s), e.g. '
            f'{", ".join(where[:3])}')
    official = record.get('official_numel')
    if official:
        scope = official.get('scope', '')
        if scope:
            numel = {'decay': 0, 'no_decay': 0}
            for name, param in model.named_parameters():
                if name.startswith(scope) and param.requires_grad:
                    wd = held[id(param)][1]
                    numel['decay' if wd > 0 else 'no_decay'] += param.numel()
        for key in ('decay', 'no_decay'):
            if official[key] != numel[key]:
                errors.append(
                    f'official_numel.{key}: the official model has '
                    f'{official[key]} elements '
                    f'{"with" if key == "decay" else "without"} weight decay '
                    f'({official["rule"]}), the optimiser {numel[key]}')


def wrapper_fields(cfg):
    ow = cfg.optim_wrapper
    amp = None
    if ow.get('type') == 'AmpOptimWrapper':
        amp = ow.get('loss_scale', 'dynamic')
    return dict(
        type=ow.get('type', 'OptimWrapper'),
        amp=amp,
        clip_grad=ow.get('clip_grad'),
        accumulative_counts=ow.get('accumulative_counts', 1))


def schedule_fields(cfg):
    train_cfg = cfg.train_cfg
    out = dict(param_scheduler=[
        {k: v for k, v in s.items()} for s in cfg.param_scheduler
    ])
    for key in ('max_epochs', 'max_iters', 'val_interval'):
        if key in train_cfg:
            out[key] = train_cfg[key]
    return out


def metafile_entry(config):
    folder = Path(config).parts[1]
    meta = yaml.safe_load(
        (CONFIG_ROOT / folder / 'metafile.yml').read_text())
    for model in meta['Models']:
        if model['Config'] == config:
            return model
    return None


def check_record(config, cfg, record, table, build=True):
    """Every difference between the config and its record, one line each."""
    errors = []
    unknown = set(record) - RECORD_KEYS
    if unknown:
        errors.append(f'record: unknown keys {sorted(unknown)}')
    if record.get('kind') not in KINDS:
        errors.append(f'kind: {record.get("kind")!r} is not one of {KINDS}')
    source = record.get('source')
    if (source is not None or record.get('kind') != 'own') and \
            source not in table.get('sources', {}):
        errors.append(f'source: {source!r} is not in sources')
    if record.get('kind') == 'official-with-deviations' and not record.get(
            'deviations'):
        errors.append('deviations: none listed for '
                      'official-with-deviations')

    # optimiser
    opt = cfg.optim_wrapper.optimizer
    for key, value in record['optimizer'].items():
        if not same(value, opt.get(key)):
            errors.append(f'optimizer.{key}: recorded {normalise(value)!r},'
                          f' config has {normalise(opt.get(key))!r}')
    extra = set(opt) - set(record['optimizer']) - {'_scope_'}
    if extra:
        errors.append(f'optimizer: config sets {sorted(extra)} that the '
                      'record does not')
    compare_subset(errors, 'optim_wrapper', record['optim_wrapper'],
                   wrapper_fields(cfg))

    # batch
    per_gpu = cfg.train_dataloader.batch_size
    gpus = record['gpus']
    if per_gpu != record['batch_per_gpu']:
        errors.append(f'batch_per_gpu: recorded {record["batch_per_gpu"]}, '
                      f'config has {per_gpu}')
    base_batch = cfg.get('auto_scale_lr', {}).get('base_batch_size')
    if base_batch != gpus * record['batch_per_gpu']:
        errors.append(f'auto_scale_lr.base_batch_size: the recorded batch is '
                      f'{gpus} x {record["batch_per_gpu"]}, config has '
                      f'{base_batch}')
    meta = metafile_entry(config)
    if meta is not None:
        md = meta['Metadata']
        if md.get('Batch Size') != gpus * record['batch_per_gpu']:
            errors.append(f'metafile Batch Size: {md.get("Batch Size")}, '
                          f'recorded batch {gpus} x {record["batch_per_gpu"]}')
        if md.get('Training Resources') != f'{gpus}x GPUs':
            errors.append(f'metafile Training Resources: '
                          f'{md.get("Training Resources")!r}, recorded '
                          f'{gpus} GPUs')
        length = md.get('Epochs', md.get('Iterations'))
        sched = schedule_fields(cfg)
        actual = sched.get('max_epochs', sched.get('max_iters'))
        if length != actual:
            errors.append(f'metafile Epochs / Iterations: {length}, config '
                          f'trains {actual}')

    # schedule
    schedule = resolve(table, 'schedules', record['schedule'])
    compare_subset(errors, 'schedule', schedule, schedule_fields(cfg))
    if len(schedule['param_scheduler']) != len(cfg.param_scheduler):
        errors.append(f'schedule.param_scheduler: recorded '
                      f'{len(schedule["param_scheduler"])} schedulers, '
                      f'config has {len(cfg.param_scheduler)}')

    # pipelines and normalisation
    pipeline = resolve(table, 'pipelines', record['pipeline'])
    for split in ('train', 'test'):
        actual = clean_pipeline(dataloader_pipeline(cfg, split))
        if normalise(pipeline[split]) != actual:
            errors.append(f'pipeline.{split}: recorded '
                          f'{normalise(pipeline[split])}, config has {actual}')
    compare_subset(errors, 'pipeline.data_preprocessor',
                   pipeline['data_preprocessor'],
                   cfg.model.get('data_preprocessor') or
                   cfg.get('data_preprocessor', {}))

    # model settings and hooks
    compare_subset(errors, 'model', record.get('model', {}), cfg.model)
    hooks = {h['type']: h for h in cfg.get('custom_hooks', [])}
    for key, value in record.get('hooks', {}).items():
        if key == 'checkpoint':
            compare_subset(errors, 'hooks.checkpoint', value,
                           cfg.default_hooks.checkpoint)
        elif value is None:
            if key in hooks:
                errors.append(f'hooks.{key}: recorded none, config has '
                              f'{hooks[key]}')
        elif key not in hooks:
            errors.append(f'hooks.{key}: recorded {value}, config has none')
        else:
            compare_subset(errors, f'hooks.{key}', value, hooks[key])

    # parameter groups
    if build:
        model = build_model(cfg)
        optimizer = build_optimizer(model, cfg)
        base = dict(lr=opt['lr'], weight_decay=opt.get('weight_decay', 0.0))
        check_param_groups(errors, record, table, model, optimizer, base)
    return errors


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def listed_configs():
    """Configs of the metafiles (demo configs have no recipe)."""
    out = []
    for path in sorted(CONFIG_ROOT.glob('*/metafile.yml')):
        for model in yaml.safe_load(path.read_text())['Models']:
            out.append(model['Config'])
    return out


def test_every_indexed_config_has_a_recipe():
    missing = [c for c in listed_configs() if c not in TABLES]
    assert not missing, ('configs with no record in configs/<backbone>/'
                         f'recipes.yml: {missing}')
    stale = [c for c in TABLES if not (REPO_ROOT / c).is_file()]
    assert not stale, f'records of configs that do not exist: {stale}'


def test_sources_name_a_commit():
    """A source is a repository at a commit, or a released package."""
    for config, (record, path, table) in TABLES.items():
        for name, source in table.get('sources', {}).items():
            assert source.get('files'), f'{path}: source {name} lists no files'
            if 'package' in source:
                assert re.fullmatch(r'[\w-]+ \d+\.\d+\.\d+',
                                    source['package']), (path, name)
                continue
            assert source.get('repo'), f'{path}: source {name} has no repo'
            assert re.fullmatch(r'[0-9a-f]{40}', str(source.get('commit'))), (
                f'{path}: source {name} needs a 40-hex commit')


@pytest.fixture(scope='module', autouse=True)
def fast_constructor():
    """mmengine's constructor asks ``pkgutil.find_loader('mmcv._ext')``
    once per module (most of its time on a detector); the answer does not
    change within a run, so it is asked once."""
    import mmengine.optim.optimizer.default_constructor as constructor
    answer = constructor.mmcv_full_available()
    original = constructor.mmcv_full_available
    constructor.mmcv_full_available = lambda: answer
    yield
    constructor.mmcv_full_available = original


#: checked in the fast tier: one config per kind of parameter-group rule
#: (the rank fixes of RMT-B and RIFormer, detectron2's groups, SyncBN heads,
#: EMA); the others are in the slow tier (about 3 s each)
FAST = {
    'configs/rmt/rmt_b_in1k_cls.py',
    'configs/rmt/cascade_maskrcnn_rmt_s_3x.py',
    'configs/rest/maskrcnn_rest_small_1x.py',
    'configs/rest/rest_lite_in1k_cls.py',
    'configs/container/container_light_in1k_cls.py',
    'configs/riformer/riformer_s12_in1k_cls.py',
}


@pytest.mark.parametrize(
    'config', [
        c if c in FAST else pytest.param(c, marks=pytest.mark.slow)
        for c in sorted(TABLES)
    ],
    ids=lambda c: c[8:-3])
def test_recipe(config):
    record, _, table = TABLES[config]
    cfg = load_config(config)
    errors = check_record(config, cfg, record, table)
    assert not errors, f'{config}:\n  ' + '\n  '.join(errors)


def test_mutated_config_is_rejected(tmp_path):
    """A copy of one config with one value changed fails, naming it."""
    config = 'configs/rmt/rmt_b_in1k_cls.py'
    record, _, table = TABLES[config]
    mutations = {
        # the lr, in the config only
        "optim_wrapper = dict(optimizer=dict(lr=1e-3))": ['optimizer.lr'],
        # the layer scales without weight decay (the official ones, of rank
        # 4, are decayed): only the optimiser's groups show it
        "optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'.gamma': "
        "dict(decay_mult=0.0)}))": ['param_groups', 'official_numel.decay'],
        # the epochs
        "train_cfg = dict(max_epochs=310)": ['schedule.max_epochs'],
        # the EMA: validating only the EMA
        "custom_hooks = [dict(type='EMAHook', momentum=1 - 0.99996 ** 4, "
        "update_buffers=True, evaluate_on_ema=True, "
        "evaluate_on_origin=False, priority='ABOVE_NORMAL')]":
        ['hooks.EMAHook.evaluate_on_origin'],
    }
    for i, (body, fields) in enumerate(mutations.items()):
        child = tmp_path / f'mutated_{i}.py'
        child.write_text(f"_base_ = '{REPO_ROOT / config}'\n{body}\n")
        cfg = load_config(child)
        errors = check_record(
            config, cfg, record, table, build=('param' in fields[0]))
        for field in fields:
            assert any(e.startswith(field) for e in errors), (
                f'mutation {body!r} not reported as {field}: {errors}')
    # and the record alone: a changed value in the table fails too
    cfg = load_config(config)
    changed = copy.deepcopy(record)
    changed['batch_per_gpu'] = 64
    errors = check_record(config, cfg, changed, table, build=False)
    assert any(e.startswith('batch_per_gpu') for e in errors), errors


def test_model_zoo_recipe_column():
    """docs/model_zoo.md says, per config, the kind its record declares."""
    words = {
        'official': 'official',
        'official, with stated deviations': 'official-with-deviations',
        "project's own": 'own',
    }
    text = (REPO_ROOT / 'docs' / 'model_zoo.md').read_text()
    rows = re.findall(r'^\| \[`([\w/]+)`\]\(\.\./configs/[\w/]+\.py\) \| '
                      r'([^|]+) \|', text, flags=re.M)
    listed = {f'configs/{name}.py': words.get(kind.strip(), kind.strip())
              for name, kind in rows}
    declared = {c: rec['kind'] for c, (rec, _, _) in TABLES.items()}
    assert listed == declared, sorted(
        set(listed.items()) ^ set(declared.items()))
