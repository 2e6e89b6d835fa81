"""Launching: what ``tools/train.py``, ``tools/test.py``, ``demo/`` and the
deploy and converter tools share (:mod:`.launch`).

:mod:`.cli` (how every tool reports a failure, and the argument checks)
needs neither mmengine nor torch, so that importing it costs nothing and
works before the OpenMMLab packages are installed
(``tools/analysis_tools/gpu_acceptance.py`` runs on a bare machine); the
names of :mod:`.launch` are imported on first use.
"""
import importlib

from .cli import ToolError, run

_LAUNCH = ('LAUNCHERS', 'SCOPE_REGISTRARS', 'build_runner',
           'check_annotation_files', 'choose_resume_checkpoint',
           'convert_sync_bn_cfg', 'enable_cpu_amp', 'load_config',
           'prepare_cpu_distributed', 'resolve_scope', 'set_local_rank',
           'set_work_dir')

#: the checks of the tools that load a checkpoint (:mod:`.checks`: the one
#: coverage rule, ``--min-coverage``), also imported on first use
_CHECKS = ('add_min_coverage_argument', 'check_checkpoint_fits',
           'check_config', 'check_config_checkpoint', 'check_file',
           'check_output_dir', 'check_output_file', 'check_shape')

__all__ = list(_LAUNCH) + list(_CHECKS) + ['ToolError', 'run']


def __getattr__(name):
    if name in _LAUNCH:
        return getattr(importlib.import_module('.launch', __name__), name)
    if name in _CHECKS:
        return getattr(importlib.import_module('.checks', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
