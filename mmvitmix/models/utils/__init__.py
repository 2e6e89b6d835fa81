"""Official-checkpoint converters of every backbone, in one place.

Each converter lives at the bottom of its backbone's file (as mmdet keeps
``swin_converter`` beside Swin); this module re-exports them so tools and
users have one import path.
"""
from ..backbones import __all__ as _names  # noqa: F401
from ..backbones.container_light import convert_container
from ..backbones.rest import convert_rest
from ..backbones.riformer import convert_riformer
from ..backbones.rmt import convert_rmt

__all__ = [
    'convert_container', 'convert_rmt', 'convert_rest', 'convert_riformer'
]
