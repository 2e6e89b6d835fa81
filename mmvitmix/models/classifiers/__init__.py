"""Classifiers for MMPretrain: RIFormer's distillation with module imitation.

Registered only when MMPretrain is installed (detection and segmentation
users need not have it)."""
try:
    import mmpretrain  # noqa: F401
except ImportError:  # pragma: no cover - MMPretrain is optional
    __all__ = []
else:
    from .riformer_distiller import RIFormerDistiller, build_teacher
    __all__ = ['RIFormerDistiller', 'build_teacher']
