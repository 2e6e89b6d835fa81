"""Set-up shared by ``tools/train.py``, ``tools/test.py`` and the tools that
build a model from a config.

One entry point serves MMDetection, MMSegmentation and MMPretrain configs:
the config's ``default_scope`` (or, when it is absent, the ``scope::`` prefix
of its ``_base_`` files) picks the downstream library, whose modules are then
registered; ``mmvitmix.models`` is imported so ``type='mmvitmix.<Backbone>'``
resolves.

Launching N processes on a machine without CUDA also works: mmengine's
``init_dist`` calls ``torch.cuda.set_device`` and defaults to NCCL, and
``MMDistributedDataParallel`` gets ``device_ids=[LOCAL_RANK]``, all of which
fail on CPU. :func:`prepare_cpu_distributed` switches the backend to gloo,
initialises the process group itself, wraps the model with
``device_ids=None`` and turns SyncBN layers (which torch runs only on
accelerators) into BN.
"""
import datetime
import importlib
import os
import os.path as osp
import subprocess
from typing import List, Optional

import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log
from mmengine.utils import import_modules_from_strings

#: default_scope -> module whose ``register_all_modules`` registers it
SCOPE_REGISTRARS = {
    'mmdet': 'mmdet.utils',
    'mmseg': 'mmseg.utils',
    'mmpretrain': 'mmpretrain.utils',
}
LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
#: norm types that need an accelerator in distributed training
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN', 'SyncBatchNorm', 'nn.SyncBatchNorm')
#: arguments of mmcv's MMSyncBN that BatchNorm does not take
_SYNC_ONLY_ARGS = ('group', 'stats_mode')


def set_local_rank(local_rank: int) -> None:
    """Export ``LOCAL_RANK`` for launchers that pass ``--local-rank``.

    ``torchrun`` sets the variable itself; ``torch.distributed.launch``
    (deprecated) passes ``--local-rank`` / ``--local_rank`` instead.
    """
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(local_rank)


def _log(msg: str, level: int = 20) -> None:
    # before the Runner exists only rank 0 should talk
    if int(os.environ.get('RANK', '0')) == 0:
        print_log(msg, logger='current', level=level)


def scope_from_bases(filename: str, _seen: Optional[set] = None) -> List[str]:
    """Scopes named by ``scope::path`` entries of ``_base_``, recursively."""
    _seen = set() if _seen is None else _seen
    path = osp.abspath(filename)
    if path in _seen or not osp.isfile(path):
        return []
    _seen.add(path)
    scopes = []
    for base in Config._get_base_files(path):
        if '::' in base:
            scopes.append(base.partition('::')[0])
        else:
            scopes.extend(
                scope_from_bases(osp.join(osp.dirname(path), base), _seen))
    return scopes


def resolve_scope(cfg: Config, filename: str) -> str:
    """Return the downstream library of a config.

    ``cfg.default_scope`` wins; without it the ``scope::`` prefixes of the
    ``_base_`` chain decide (they must agree).
    """
    scope = cfg.get('default_scope')
    source = 'default_scope'
    if scope is None:
        found = sorted(set(scope_from_bases(filename)))
        if len(found) > 1:
            raise ValueError(
                f'{filename}: the _base_ files come from several libraries '
                f'{found}; set default_scope to one of '
                f'{sorted(SCOPE_REGISTRARS)}')
        if not found:
            raise ValueError(
                f'{filename}: cannot tell which library the config is for. '
                f'Set default_scope to one of {sorted(SCOPE_REGISTRARS)} '
                "(e.g. default_scope = 'mmdet'), or inherit from that "
                "library's configs with _base_ = 'mmdet::...'")
        scope = found[0]
        source = "the _base_ prefix '%s::'" % scope
    if scope not in SCOPE_REGISTRARS:
        raise ValueError(
            f'{filename}: {source} is {scope!r}; accepted values are '
            f'{sorted(SCOPE_REGISTRARS)}')
    return scope


def register_scope(scope: str) -> None:
    """Register every module of the downstream library ``scope``."""
    module_name = SCOPE_REGISTRARS[scope]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f'the config is for {scope} (default_scope={scope!r}) but '
            f'{module_name} cannot be imported: {exc}. Install it, e.g. '
            'with tools/install_env.sh') from exc
    module.register_all_modules(init_default_scope=False)


def load_config(filename: str,
                cfg_options: Optional[dict] = None,
                launcher: str = 'none') -> Config:
    """Load a config, apply ``--cfg-options``, resolve and register its scope.

    Also imports ``mmvitmix.models`` and the config's ``custom_imports``
    (again after the options are merged, in case they added some).
    """
    if not osp.isfile(filename):
        raise FileNotFoundError(f'config file {filename!r} does not exist')
    if launcher not in LAUNCHERS:
        raise ValueError(
            f'unknown launcher {launcher!r}; accepted: {list(LAUNCHERS)}')
    cfg = Config.fromfile(filename)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = resolve_scope(cfg, filename)
    cfg.default_scope = scope
    import mmvitmix.models  # noqa: F401  registers mmvitmix.<Backbone>
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    register_scope(scope)
    return cfg


def set_work_dir(cfg: Config, work_dir: Optional[str], filename: str) -> None:
    """``--work-dir`` > ``cfg.work_dir`` > ``work_dirs/<config stem>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(filename))[0])


def _replace_sync_bn(node, path: str, found: List[str]):
    if isinstance(node, dict):
        if node.get('type') in SYNC_BN_TYPES:
            found.append(f'{path} ({node["type"]})')
            node['type'] = 'BN'
            for key in _SYNC_ONLY_ARGS:
                node.pop(key, None)
        for key, value in node.items():
            _replace_sync_bn(value, f'{path}.{key}', found)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _replace_sync_bn(value, f'{path}[{i}]', found)


def convert_sync_bn_cfg(cfg: Config) -> List[str]:
    """Turn SyncBN norm configs in ``cfg.model`` into BN; drop ``sync_bn``.

    Returns:
        list[str]: the config paths that were changed.
    """
    found: List[str] = []
    _replace_sync_bn(cfg.model, 'model', found)
    if cfg.get('sync_bn') is not None:
        found.append(f'sync_bn ({cfg.sync_bn!r})')
        cfg.sync_bn = None
    return found


def _export_launcher_env(launcher: str) -> None:
    """Fill RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* as mmengine would."""
    if launcher == 'slurm':
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
        if 'MASTER_ADDR' not in os.environ:
            node_list = os.environ['SLURM_NODELIST']
            os.environ['MASTER_ADDR'] = subprocess.getoutput(
                f'scontrol show hostname {node_list} | head -n1')
        os.environ.setdefault('MASTER_PORT', os.environ.get('PORT', '29500'))
    elif launcher == 'mpi':
        os.environ['RANK'] = os.environ['OMPI_COMM_WORLD_RANK']
        os.environ['WORLD_SIZE'] = os.environ['OMPI_COMM_WORLD_SIZE']
        os.environ['LOCAL_RANK'] = os.environ['OMPI_COMM_WORLD_LOCAL_RANK']
        if 'MASTER_ADDR' not in os.environ:
            raise KeyError('launcher mpi: set MASTER_ADDR to the address of '
                           'rank 0')
        os.environ.setdefault('MASTER_PORT', '29500')


def prepare_cpu_distributed(cfg: Config) -> bool:
    """Make a multi-process launch work without CUDA; no-op otherwise.

    With ``cfg.launcher != 'none'`` and no CUDA device:

    * ``env_cfg.dist_cfg.backend`` ``nccl`` (mmengine's default) becomes
      ``gloo``, with a log line;
    * the process group is initialised here, since mmengine's ``init_dist``
      calls ``torch.cuda.set_device`` (the Runner skips its own
      initialisation when a group exists);
    * the DDP wrapper gets ``device_ids=None`` (CPU modules accept no
      device ids);
    * SyncBN layers become BN, with a warning: torch's ``SyncBatchNorm``
      refuses CPU tensors in distributed training.

    Returns:
        bool: whether the CPU path was taken.
    """
    if cfg.launcher == 'none' or torch.cuda.is_available():
        return False
    import torch.distributed as dist

    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    dist_cfg = env_cfg.setdefault('dist_cfg', ConfigDict())
    backend = dist_cfg.get('backend', 'nccl')
    if backend == 'nccl':
        _log('CUDA is not available: using the gloo backend instead of nccl '
             'for distributed training on CPU')
        backend = dist_cfg['backend'] = 'gloo'
    elif backend not in ('gloo', 'mpi'):
        raise ValueError(
            f'env_cfg.dist_cfg.backend={backend!r} cannot run without CUDA; '
            "use 'gloo' (or 'mpi' where torch was built with it)")

    changed = convert_sync_bn_cfg(cfg)
    if changed:
        _log(
            'CUDA is not available and torch.nn.SyncBatchNorm needs an '
            'accelerator in distributed training: SyncBN replaced by BN '
            '(statistics are no longer synchronised across processes) at ' +
            ', '.join(changed),
            level=30)

    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        # mmengine's default wrapper, minus the CUDA device id
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel',
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False),
            device_ids=None)
    else:
        wrapper['device_ids'] = None

    if not dist.is_initialized():
        _export_launcher_env(cfg.launcher)
        kwargs = {}
        if dist_cfg.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(
                seconds=dist_cfg['timeout'])
        dist.init_process_group(backend=backend, **kwargs)
    return True


def build_runner(cfg: Config):
    """``Runner.from_cfg``, or the ``RUNNERS`` registry for ``runner_type``.

    Also allow-lists what mmengine pickles into its checkpoints, so that
    ``--resume`` and ``tools/test.py`` load them under torch >= 2.6 (see
    :func:`mmvitmix.utils.allow_mmengine_checkpoints`).
    """
    from mmvitmix.utils import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()
    if 'runner_type' not in cfg:
        from mmengine.runner import Runner
        return Runner.from_cfg(cfg)
    from mmengine.registry import RUNNERS
    return RUNNERS.build(cfg)


# ------------------------------------------------------------ reliability
#: JSON annotation files up to this size are parsed completely before the
#: run starts; larger ones get a cheap check (not truncated, an object)
FULL_PARSE_LIMIT = 100 * 2**20


def _dataset_cfgs(node, path: str):
    """Yield ``(config path, dataset cfg)`` for a dataset and its wrapped
    datasets (``dataset=`` of RepeatDataset & co., ``datasets=`` of
    ConcatDataset)."""
    if not isinstance(node, dict):
        return
    yield path, node
    if isinstance(node.get('dataset'), dict):
        yield from _dataset_cfgs(node['dataset'], f'{path}.dataset')
    for i, child in enumerate(node.get('datasets') or []):
        yield from _dataset_cfgs(child, f'{path}.datasets[{i}]')


DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def annotation_files(cfg: Config, loaders=DATALOADERS) -> List[tuple]:
    """``(config path, dataset type, file)`` of every annotation file the
    ``loaders`` of the config read (``data_root`` joined as mmengine's
    ``BaseDataset`` does; empty ``ann_file`` skipped)."""
    found = []
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not isinstance(loader_cfg, dict):
            continue
        for path, ds in _dataset_cfgs(loader_cfg.get('dataset'),
                                      f'{loader}.dataset'):
            ann_file = ds.get('ann_file')
            if not ann_file or not isinstance(ann_file, str):
                continue
            if '://' in ann_file:  # remote backends: left to the dataset
                continue
            data_root = ds.get('data_root') or ''
            if data_root and not osp.isabs(ann_file):
                ann_file = osp.join(data_root, ann_file)
            found.append((f'{path}.ann_file', ds.get('type'), ann_file))
    return found


def _json_problem(path: str, dataset_type) -> Optional[str]:
    import json
    size = osp.getsize(path)
    if size > FULL_PARSE_LIMIT:
        with open(path, 'rb') as f:
            head = f.read(64).lstrip()
            f.seek(max(size - 64, 0))
            tail = f.read().rstrip()
        if not head.startswith((b'{', b'[')) or not tail.endswith(
            (b'}', b']')):
            return ('it is not a complete JSON document (truncated?): it '
                    'does not start with { or [ and end with } or ]')
        return None
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (UnicodeDecodeError, ValueError) as exc:
        return f'it is not valid JSON ({exc})'
    if 'coco' in str(dataset_type).lower():
        if not isinstance(data, dict):
            return (f'a COCO annotation file must hold a JSON object, this '
                    f'one holds a {type(data).__name__}')
        missing = [k for k in ('images', 'categories') if k not in data]
        if missing:
            return f'a COCO annotation file needs the keys {missing}'
    return None


def check_annotation_files(cfg: Config, loaders=DATALOADERS) -> int:
    """Fail before the run starts on a missing, empty or malformed
    annotation file, naming the file and the config entry.

    JSON files are parsed (completely up to :data:`FULL_PARSE_LIMIT`, else
    checked for truncation); COCO files must hold ``images`` and
    ``categories``. Other formats (e.g. the text split lists of mmseg and
    mmpretrain) must exist and be non-empty.

    Args:
        cfg (Config): the config.
        loaders (Sequence[str]): the dataloaders the run builds (training:
            train and val; testing: test).

    Returns:
        int: how many files were checked.
    """
    files = annotation_files(cfg, loaders)
    for entry, dataset_type, path in files:
        where = f'{entry} of {dataset_type}'
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'annotation file {path!r} ({where}) does not exist' +
                (' (it is a folder)' if osp.isdir(path) else ''))
        if osp.getsize(path) == 0:
            raise ValueError(f'annotation file {path!r} ({where}) is empty '
                             '(0 bytes)')
        if path.lower().endswith('.json'):
            problem = _json_problem(path, dataset_type)
            if problem:
                raise ValueError(f'annotation file {path!r} ({where}) is '
                                 f'malformed: {problem}')
    return len(files)


def _checkpoint_number(path: str) -> int:
    stem = osp.splitext(osp.basename(path))[0]
    digits = stem.rpartition('_')[2]
    return int(digits) if digits.isdigit() else -1


def resume_candidates(work_dir: str) -> List[str]:
    """Checkpoints of ``work_dir``, newest first: the one its
    ``last_checkpoint`` file names, then ``*.pth`` by modification time
    (ties: by the number in ``iter_N`` / ``epoch_N``)."""
    import glob
    files = sorted(
        glob.glob(osp.join(work_dir, '*.pth')),
        key=lambda p: (osp.getmtime(p), _checkpoint_number(p)),
        reverse=True)
    last_file = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(last_file):
        with open(last_file) as f:
            named = f.read().strip()
        if named:
            if not osp.isabs(named) and not osp.exists(named):
                named = osp.join(work_dir, osp.basename(named))
            files = [named] + [
                p for p in files if osp.abspath(p) != osp.abspath(named)
            ]
    return files


def choose_resume_checkpoint(work_dir: str,
                             requested: Optional[str] = None
                             ) -> Optional[str]:
    """The checkpoint to resume from, checked to be readable.

    ``requested`` (``--resume PATH``) must be readable, else a
    ``RuntimeError`` names it, the reason and the readable alternatives.
    Without it (``--resume``) the newest readable checkpoint of
    ``work_dir`` is taken; each damaged one skipped on the way (e.g.
    truncated by a crash while saving) is named in a warning. None when
    ``work_dir`` holds no checkpoint (training starts from the beginning).
    """
    from mmvitmix.utils import checkpoint_damage
    if requested is not None:
        damage = checkpoint_damage(requested)
        if damage is None:
            return requested
        good = [
            p for p in resume_candidates(osp.dirname(requested) or '.')
            if osp.abspath(p) != osp.abspath(requested)
            and checkpoint_damage(p) is None
        ]
        raise RuntimeError(
            f'cannot resume from {requested!r}: the checkpoint is damaged '
            f'({damage}). Readable checkpoints beside it: '
            f'{good or "none"}')
    damaged = []
    for path in resume_candidates(work_dir):
        damage = checkpoint_damage(path)
        if damage is None:
            if damaged:
                _log(f'resuming from {path}, the newest readable checkpoint',
                     level=30)
            return path
        damaged.append(path)
        _log(f'skipping damaged checkpoint {path}: {damage}', level=30)
    if damaged:
        raise RuntimeError(
            f'no readable checkpoint to resume from in {work_dir!r}: every '
            f'one is damaged: {damaged}')
    return None


def enable_cpu_amp(cfg: Config) -> bool:
    """Let ``AmpOptimWrapper`` configs train on a machine without an
    accelerator, as configured, with bfloat16 autocast.

    mmengine 0.10's ``AmpOptimWrapper`` asserts that CUDA (or NPU / MLU /
    MUSA) is available, although its autocast context supports the CPU
    (bfloat16 only) and torch's GradScaler disables itself without CUDA
    (bfloat16 keeps float32's exponent range, so no loss scaling is
    needed). Without an accelerator this relaxes that one check, in this
    process only, and says so; a ``dtype`` other than bfloat16 is an
    error. The wrapper type and its arguments stay as configured.

    Returns:
        bool: whether the CPU path was enabled.
    """
    wrapper = cfg.get('optim_wrapper')
    if not isinstance(wrapper, dict) or wrapper.get(
            'type') != 'AmpOptimWrapper':
        return False
    from mmengine.device import (is_cuda_available, is_mlu_available,
                                 is_musa_available, is_npu_available)
    if (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available()):
        return False
    dtype = wrapper.get('dtype')
    if dtype not in (None, 'bfloat16', torch.bfloat16):
        raise ValueError(
            f'optim_wrapper.dtype={dtype!r}: without an accelerator '
            'AmpOptimWrapper runs CPU autocast, which takes bfloat16 only; '
            "set optim_wrapper.dtype='bfloat16' or leave it unset")
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    amp_optimizer_wrapper.is_cuda_available = lambda: True
    patched = _float_mmcv_cpu_ops()
    _log('no accelerator: AmpOptimWrapper runs with bfloat16 autocast on the '
         f'CPU; its loss scaling (loss_scale={wrapper.get("loss_scale")!r}) '
         'is disabled by torch without CUDA, which bfloat16 does not need; '
         f'mmcv CPU ops without bfloat16 kernels run in float32: {patched}',
         level=30)
    return True


def _float32_inputs(fn, name: str):
    """``fn`` with its bfloat16 CPU tensor arguments cast to float32 and
    its floating outputs cast back to bfloat16."""
    import functools
    if getattr(fn, '_mmvitmix_float32', False):
        return fn

    def cast(value):
        if (isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16
                and value.device.type == 'cpu'):
            return value.float()
        return value

    def back(value):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.to(torch.bfloat16)
        if isinstance(value, tuple):
            return tuple(back(v) for v in value)
        return value

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        values = list(args) + list(kwargs.values())
        if not any(cast(v) is not v for v in values):
            return fn(*args, **kwargs)
        out = fn(*[cast(a) for a in args],
                 **{k: cast(v)
                    for k, v in kwargs.items()})
        # floating outputs in the inputs' dtype, as the CUDA kernels give
        return back(out)

    wrapper._mmvitmix_float32 = True
    return wrapper


def _float_mmcv_cpu_ops() -> List[str]:
    """Make mmcv's CPU ops that detectors call under autocast take
    bfloat16 inputs (as their CUDA kernels take half).

    mmcv 2.1's CPU kernels of ``nms`` (RPN proposals, test-time NMS) and
    ``roi_align`` (RoI heads) dispatch on float32 only ("expected scalar type
    Float but found BFloat16"); they are pybind functions that autocast does
    not know. Their module-level entry points, which mmcv's ``batched_nms``
    and ``RoIAlign`` look up at call time, compute in float32 and return
    bfloat16, as the CUDA kernels return the dtype they were given.
    """
    patched = []
    import sys
    try:
        import mmcv.ops  # noqa: F401  (mmcv.ops.nms is also a function)
    except ImportError:  # mmcv without its ops: nothing to adapt
        return patched
    for name in ('nms', 'roi_align'):
        module = sys.modules[f'mmcv.ops.{name}']
        setattr(module, name, _float32_inputs(getattr(module, name), name))
        patched.append(f'mmcv.ops.{name}')
    return patched
