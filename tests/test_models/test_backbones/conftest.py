"""What every backbone test shares: builders of the tiny architectures
(:data:`tests.utils.TINY_ARCHS`) and golden fixtures with one skip/fail
policy. Closeness relative to a tensor's scale:
:func:`mmvitmix.testing.assert_close_rel`.

A backbone registered in ``mmvitmix.registry.MODELS`` as a subclass of
``VitMixBackbone`` must have an entry in :data:`tests.utils.TINY_ARCHS`;
``test_contract.py`` fails for one that does not, so a new backbone is
covered by the shared contract from the day it is registered.
"""
import os

import pytest
import torch

from mmvitmix.models import RMT, ContainerLight, ResT, ResTV2, RIFormer
from tests.utils import GOLDEN_DIR, TINY_ARCHS, tiny_arch

#: every backbone under the contract (each needs a tiny arch in
#: :data:`tests.utils.TINY_ARCHS`)
BACKBONES = [RMT, ResT, ResTV2, ContainerLight, RIFormer]
IDS = [cls.__name__ for cls in BACKBONES]

#: set MMVITMIX_REQUIRE_GOLDEN=1 (CI has ../shared) to fail instead of skip
REQUIRE_GOLDEN = os.environ.get('MMVITMIX_REQUIRE_GOLDEN') == '1'


def tiny(cls, **kwargs):
    """A tiny ``cls`` (drop path 0 unless given)."""
    kwargs.setdefault('drop_path_rate', 0.)
    return cls(arch=tiny_arch(cls.__name__), **kwargs)


def embed_dims(cls):
    arch = TINY_ARCHS[cls.__name__]
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


@pytest.fixture(params=BACKBONES, ids=IDS)
def backbone_cls(request):
    return request.param
