"""Distillation losses (used by :mod:`mmvitmix.models.classifiers`)."""
from .distill_losses import (KD_MODES, RELATIONS, KDLoss, ModuleImitationLoss,
                             RelationImitationLoss)

__all__ = [
    'KD_MODES', 'RELATIONS', 'KDLoss', 'ModuleImitationLoss',
    'RelationImitationLoss'
]
