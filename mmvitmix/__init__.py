"""mmvitmix: RMT, ResT, Container-Light and RIFormer backbones for OpenMMLab."""
from .version import __version__

__all__ = ['__version__']
