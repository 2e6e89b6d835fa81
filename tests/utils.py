"""Helpers shared by the tests (checks shared with the tools live in
:mod:`mmvitmix.testing`)."""
import copy
import importlib.util
import re
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
#: golden fixtures of the official implementations (../shared/golden)
GOLDEN_DIR = REPO_ROOT.parent / 'shared' / 'golden'

#: backbone type -> a small ``arch`` dict (4 stages, fast on 2 cores): the
#: one tiny architecture of each backbone that every test builds
TINY_ARCHS = {
    'RMT':
    dict(
        embed_dims=[16, 32, 48, 64],
        depths=[1, 1, 2, 1],
        num_heads=[2, 2, 3, 4],
        init_values=[2, 2, 2, 2],
        heads_ranges=[4, 4, 6, 6],
        mlp_ratios=[2, 2, 2, 2],
        chunkwise_recurrents=[True, True, False, False],
        layerscales=[False, False, True, True]),
    'ResT':
    dict(
        embed_dims=[16, 32, 48, 64],
        num_heads=[1, 2, 3, 4],
        mlp_ratios=[2, 2, 2, 2],
        qkv_bias=True,
        depths=[1, 1, 2, 1],
        sr_ratios=[8, 4, 2, 1],
        apply_transform=True),
    'ResTV2':
    dict(
        embed_dims=[16, 32, 48, 64],
        num_heads=[1, 2, 3, 4],
        depths=[1, 1, 2, 1],
        sr_ratios=[8, 4, 2, 1]),
    'ContainerLight':
    dict(
        embed_dim=[16, 32, 48, 64],
        depth=[1, 1, 1, 2],
        num_heads=4,
        mlp_ratio=[2, 2, 2, 2]),
    'RIFormer':
    dict(
        layers=[1, 1, 2, 1],
        embed_dims=[16, 24, 32, 40],
        mlp_ratios=[2, 2, 2, 2],
        layer_scale_init_value=1e-5),
}


def tiny_arch(name: str) -> dict:
    """A copy of the tiny ``arch`` of backbone type ``name``."""
    return copy.deepcopy(TINY_ARCHS[name])


def load_script(path) -> object:
    """A script of ``tools/`` or ``demo/`` (``path`` relative to the
    repository root) imported as a module, under a name of its own, so that
    its functions can be called in-process."""
    path = REPO_ROOT / path
    name = 'mmvitmix_script_' + re.sub(r'\W', '_', str(path.relative_to(
        REPO_ROOT).with_suffix('')))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def zeros_like_table(table: dict, device: str = 'cpu') -> dict:
    """A state dict of zeros from an official {key: shape} table.

    ``device='meta'`` gives shape-only tensors (no memory, instant).
    """
    return {k: torch.zeros(shape, device=device) for k, shape in table.items()}
