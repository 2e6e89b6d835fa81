"""Importing this module registers every mmvitmix backbone in
:data:`mmvitmix.registry.MODELS` (scope ``mmvitmix``)."""
from .backbones import *  # noqa: F401,F403
from .backbones import __all__ as _backbones_all

__all__ = list(_backbones_all)
