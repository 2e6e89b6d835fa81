"""Shared bricks of the backbones, and every official-checkpoint converter.

Each converter lives at the bottom of its backbone's file (as mmdet keeps
``swin_converter`` beside Swin); this module re-exports them so tools and
users have one import path. They are imported on first access, so that the
backbones can import the bricks from here without an import cycle.
"""
import importlib

from .bricks import ConvMlp

_CONVERTERS = {
    'convert_container': 'container_light',
    'convert_rest': 'rest',
    'convert_restv2': 'restv2',
    'convert_riformer': 'riformer',
    'convert_rmt': 'rmt',
}

__all__ = ['ConvMlp', *sorted(_CONVERTERS)]


def __getattr__(name):
    if name in _CONVERTERS:
        module = importlib.import_module(
            f'mmvitmix.models.backbones.{_CONVERTERS[name]}')
        return getattr(module, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
