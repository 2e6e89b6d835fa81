"""Launching: what ``tools/train.py``, ``tools/test.py``, ``demo/`` and the
deploy and converter tools share (:mod:`.launch`)."""
from .checks import (add_min_coverage_argument, check_checkpoint_fits,
                     check_config, check_config_checkpoint, check_file, check_output_dir,
                     check_output_file, check_shape)
from .cli import ToolError, run
from .launch import (LAUNCHERS, SCOPE_REGISTRARS, build_runner,
                     check_annotation_files, choose_resume_checkpoint,
                     convert_sync_bn_cfg, enable_cpu_amp, load_config,
                     prepare_cpu_distributed, resolve_scope, set_local_rank,
                     set_work_dir)

__all__ = [
    'LAUNCHERS', 'SCOPE_REGISTRARS', 'build_runner', 'check_annotation_files',
    'choose_resume_checkpoint', 'convert_sync_bn_cfg', 'enable_cpu_amp',
    'load_config', 'prepare_cpu_distributed', 'resolve_scope',
    'set_local_rank', 'set_work_dir', 'ToolError', 'run',
    'add_min_coverage_argument', 'check_checkpoint_fits', 'check_config',
    'check_config_checkpoint',
    'check_file', 'check_output_dir', 'check_output_file', 'check_shape'
]
