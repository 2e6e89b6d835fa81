"""Attention seams of mmvitmix (RMT's retention, ResT's EMSA), their
backends (:mod:`.backends`), RMT's decay and rotary shift, the depthwise
conv with a compiled CPU weight gradient, and FLOP formulas."""
from . import flops  # noqa: F401  (FLOP formulas of the seams' ops)
from .decay import RetentionDecay
from .emsa import emsa_attention, emsa_attention_pytorch
from .retention import (retention_1d, retention_1d_pytorch, retention_2d,
                        retention_2d_pytorch, retention_attention)

__all__ = [
    'emsa_attention', 'emsa_attention_pytorch', 'retention_attention',
    'retention_1d', 'retention_2d', 'retention_1d_pytorch',
    'retention_2d_pytorch', 'RetentionDecay'
]
