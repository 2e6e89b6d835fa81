from .checkpoint import (allow_mmengine_checkpoints, check_output_path,
                         checkpoint_damage, save_checkpoint_atomic)

__all__ = [
    'allow_mmengine_checkpoints', 'check_output_path', 'checkpoint_damage',
    'save_checkpoint_atomic'
]
