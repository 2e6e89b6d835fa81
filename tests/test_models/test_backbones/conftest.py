"""What every backbone test shares: tiny architectures, builders, golden
fixtures with one skip/fail policy, tolerance helpers.

A backbone registered in ``mmvitmix.registry.MODELS`` as a subclass of
``VitMixBackbone`` must have an entry in :data:`TINY_ARCHS`;
``test_contract.py`` fails for one that does not, so a new backbone is
covered by the shared contract from the day it is registered.
"""
import copy
import os

import pytest
import torch

from mmvitmix.models import RMT, ContainerLight, ResT, ResTV2, RIFormer
from tests.utils import GOLDEN_DIR

#: backbone class -> a small ``arch`` dict (4 stages, fast on 2 cores)
TINY_ARCHS = {
    RMT:
    dict(
        embed_dims=[16, 32, 48, 64],
        depths=[1, 1, 2, 1],
        num_heads=[2, 2, 3, 4],
        init_values=[2, 2, 2, 2],
        heads_ranges=[4, 4, 6, 6],
        mlp_ratios=[2, 2, 2, 2],
        chunkwise_recurrents=[True, True, False, False],
        layerscales=[False, False, True, True]),
    ResT:
    dict(
        embed_dims=[16, 32, 48, 64],
        num_heads=[1, 2, 3, 4],
        mlp_ratios=[2, 2, 2, 2],
        qkv_bias=True,
        depths=[1, 1, 2, 1],
        sr_ratios=[8, 4, 2, 1],
        apply_transform=True),
    ResTV2:
    dict(
        embed_dims=[16, 32, 48, 64],
        num_heads=[1, 2, 3, 4],
        depths=[1, 1, 2, 1],
        sr_ratios=[8, 4, 2, 1]),
    ContainerLight:
    dict(
        embed_dim=[16, 32, 48, 64],
        depth=[1, 1, 1, 2],
        num_heads=4,
        mlp_ratio=[2, 2, 2, 2]),
    RIFormer:
    dict(
        layers=[1, 1, 2, 1],
        embed_dims=[16, 24, 32, 40],
        mlp_ratios=[2, 2, 2, 2],
        layer_scale_init_value=1e-5),
}
BACKBONES = list(TINY_ARCHS)
IDS = [cls.__name__ for cls in BACKBONES]

#: set MMVITMIX_REQUIRE_GOLDEN=1 (CI has ../shared) to fail instead of skip
REQUIRE_GOLDEN = os.environ.get('MMVITMIX_REQUIRE_GOLDEN') == '1'


def tiny(cls, **kwargs):
    """A tiny ``cls`` (drop path 0 unless given)."""
    kwargs.setdefault('drop_path_rate', 0.)
    return cls(arch=copy.deepcopy(TINY_ARCHS[cls]), **kwargs)


def embed_dims(cls):
    arch = TINY_ARCHS[cls]
    return list(arch.get('embed_dims', arch.get('embed_dim')))


def load_golden(name: str):
    """A golden fixture of ``../shared/golden``: skipped when the folder is
    absent (a bare checkout), unless ``MMVITMIX_REQUIRE_GOLDEN=1``."""
    path = GOLDEN_DIR / name
    if not path.is_file():
        if REQUIRE_GOLDEN:
            pytest.fail(f'golden fixture {path} is missing')
        pytest.skip(f'golden fixture {path} is not present')
    return torch.load(path, map_location='cpu', weights_only=False)


def load_golden_json(name: str = 'official_checkpoints.json'):
    """A JSON table of ``../shared/golden`` (the key/shape tables of every
    official release), with the policy of :func:`load_golden`."""
    import json
    path = GOLDEN_DIR / name
    if not path.is_file():
        if REQUIRE_GOLDEN:
            pytest.fail(f'golden table {path} is missing')
        pytest.skip(f'golden table {path} is not present')
    with open(path) as f:
        return json.load(f)


def assert_rel_close(actual, expected, rel=1e-5):
    """``max|a - e| <= rel * max|e|`` (the golden files' promise)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = expected.abs().max().item()
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= rel * max(scale, 1e-4), (
        f'max abs error {err:.3e} > {rel:g} x max|expected| {scale:.3e}')


@pytest.fixture(params=BACKBONES, ids=IDS)
def backbone_cls(request):
    return request.param
