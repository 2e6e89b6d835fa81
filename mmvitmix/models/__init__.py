"""Importing this module registers every mmvitmix backbone in
:data:`mmvitmix.registry.MODELS` (scope ``mmvitmix``), the distillation
losses (:mod:`.losses`) and, when MMPretrain is installed, the official
classification heads (:mod:`.heads`) and RIFormer's distiller
(:mod:`.classifiers`)."""
from .backbones import *  # noqa: F401,F403
from .backbones import __all__ as _backbones_all
from .classifiers import *  # noqa: F401,F403
from .classifiers import __all__ as _classifiers_all
from .heads import __all__ as _heads_all
from .heads import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .losses import __all__ as _losses_all

__all__ = (
    list(_backbones_all) + list(_heads_all) + list(_classifiers_all) +
    list(_losses_all))
