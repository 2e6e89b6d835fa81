"""Classification heads of the official releases, for MMPretrain.

Registered only when MMPretrain is installed (detection and segmentation
users need not have it)."""
try:
    import mmpretrain  # noqa: F401
except ImportError:  # pragma: no cover - MMPretrain is optional
    __all__ = []
else:
    from .rmt_cls_head import RMTClsHead
    __all__ = ['RMTClsHead']
