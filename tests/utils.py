"""Helpers shared by the tests."""
from pathlib import Path

import torch

#: golden fixtures of the official implementations (../shared/golden)
GOLDEN_DIR = Path(__file__).resolve().parents[1].parent / 'shared' / 'golden'
REPO_ROOT = Path(__file__).resolve().parents[1]


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor,
                     rel: float, abs_floor: float = 1e-4) -> None:
    """Assert ``|a - e| <= rel * max|e| + tiny`` (relative to the tensor scale).

    The golden fixtures promise ~1e-5 relative (1e-4 absolute on their
    scales); a wrong mapping shows as O(1).
    """
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = expected.abs().max().item()
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= rel * scale + rel * abs_floor, (
        f'max abs error {err:.3e} > {rel:g} x max|expected| {scale:.3e}')


def zeros_like_table(table: dict, device: str = 'cpu') -> dict:
    """A state dict of zeros from an official {key: shape} table.

    ``device='meta'`` gives shape-only tensors (no memory, instant).
    """
    return {k: torch.zeros(shape, device=device) for k, shape in table.items()}
