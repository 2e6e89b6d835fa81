"""Importing this module registers every mmvitmix backbone in
:data:`mmvitmix.registry.MODELS` (scope ``mmvitmix``), and, when MMPretrain
is installed, the official classification heads (:mod:`.heads`)."""
from .backbones import *  # noqa: F401,F403
from .backbones import __all__ as _backbones_all
from .heads import __all__ as _heads_all
from .heads import *  # noqa: F401,F403

__all__ = list(_backbones_all) + list(_heads_all)
