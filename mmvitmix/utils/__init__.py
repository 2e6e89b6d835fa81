from .checkpoint import (DEFAULT_MIN_COVERAGE, CheckpointError,
                         CheckpointNotFoundError, Coverage,
                         allow_mmengine_checkpoints, check_coverage,
                         check_min_coverage, check_output_path,
                         checkpoint_damage, load_checked, measure_coverage,
                         model_state_dict, read_checkpoint,
                         save_checkpoint_atomic)
from mmvitmix.apis.cli import ToolError

__all__ = [
    'DEFAULT_MIN_COVERAGE', 'CheckpointError', 'CheckpointNotFoundError',
    'Coverage', 'ToolError',
    'allow_mmengine_checkpoints', 'check_coverage', 'check_min_coverage',
    'check_output_path', 'checkpoint_damage', 'load_checked',
    'measure_coverage', 'model_state_dict', 'read_checkpoint',
    'save_checkpoint_atomic'
]
