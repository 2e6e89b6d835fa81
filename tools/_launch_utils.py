"""Set-up shared by ``tools/train.py`` and ``tools/test.py``.

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
