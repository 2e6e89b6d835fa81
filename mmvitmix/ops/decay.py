"""RMT's spatial decay ``log γ_h · distance`` as additive attention masks.

A whole-attention stage at detection resolution has thousands of tokens: its
(heads, L, L) mask is hundreds of MB. :class:`RetentionDecay` holds one
stage's ``log γ`` for one forward pass and makes each mask once, on first
use, for all the stage's blocks: one tensor computed and, under autograd,
one tensor saved for backward, however many blocks read it (as the official
code builds its masks once per stage).
"""
from typing import Dict, Tuple

import torch
from torch import Tensor

__all__ = ['decay_bias_1d', 'decay_bias_2d', 'RetentionDecay']


def decay_bias_1d(length: int, log_decay: Tensor,
                  dtype: torch.dtype) -> Tensor:
    """``log_decay[h] * |i - j|`` as a (heads, L, L) tensor."""
    index = torch.arange(length, device=log_decay.device, dtype=dtype)
    dist = (index[:, None] - index[None, :]).abs()
    return dist * log_decay.to(dtype)[:, None, None]


def decay_bias_2d(height: int, width: int, log_decay: Tensor,
                  dtype: torch.dtype) -> Tensor:
    """``log_decay[h] * (|Δy| + |Δx|)`` as a (heads, H·W, H·W) tensor."""
    ys = torch.arange(height, device=log_decay.device, dtype=dtype)
    xs = torch.arange(width, device=log_decay.device, dtype=dtype)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing='ij'), -1)
    grid = grid.reshape(height * width, 2)
    dist = (grid[:, None, :] - grid[None, :, :]).abs().sum(-1)
    return dist * log_decay.to(dtype)[:, None, None]


class RetentionDecay:
    """One stage's decay for one forward pass, its masks made once (a bare
    ``log_decay`` given to :func:`mmvitmix.ops.retention_attention` is
    wrapped in a fresh one: masks then made per call).

    Args:
        log_decay (Tensor): (heads,) ``log γ_h`` (negative).
    """

    def __init__(self, log_decay: Tensor):
        if not isinstance(log_decay, Tensor) or log_decay.dim() != 1:
            raise ValueError('RetentionDecay: log_decay must be a (heads,) '
                             f'tensor, got {log_decay!r}')
        self.log_decay = log_decay
        self._masks: Dict[Tuple, Tensor] = {}

    def mask(self, length: int, grid_width: int,
             dtype: torch.dtype) -> Tensor:
        """The (heads, L, L) mask: 1-D over ``length`` tokens when
        ``grid_width`` is 0, else the Manhattan distance on rows of
        ``grid_width`` tokens. Made once per (shape, dtype, autograd mode):
        a mask made without autograd (e.g. in a checkpointed block's first
        pass) is not reused where a gradient may be needed. Symbolic sizes
        (``torch.export`` with dynamic shapes) are not cached: hashing them
        would specialise the exported graph to the traced size."""
        if not (type(length) is int and type(grid_width) is int):
            return self._make(length, grid_width, dtype)
        key = (length, grid_width, dtype, torch.is_grad_enabled())
        found = self._masks.get(key)
        if found is None:
            found = self._masks[key] = self._make(length, grid_width, dtype)
        return found

    def _make(self, length, grid_width, dtype: torch.dtype) -> Tensor:
        if grid_width:
            return decay_bias_2d(length // grid_width, grid_width,
                                 self.log_decay, dtype)
        return decay_bias_1d(length, self.log_decay, dtype)
