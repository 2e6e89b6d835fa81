"""Distillation losses (used by :mod:`mmvitmix.models.classifiers`)."""
from .distill_losses import KD_MODES, KDLoss, ModuleImitationLoss

__all__ = ['KD_MODES', 'KDLoss', 'ModuleImitationLoss']
