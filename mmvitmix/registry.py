"""The one model registry of mmvitmix.

It is a child of mmengine's root ``MODELS``, so mmdet, mmseg and mmpretrain
(whose registries are children of the same root) all find a backbone
registered here when a config says ``type='mmvitmix.RMT'`` and imports
``mmvitmix.models`` through ``custom_imports``.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry(
    'model',
    parent=MMENGINE_MODELS,
    scope='mmvitmix',
    locations=['mmvitmix.models'])

__all__ = ['MODELS']
