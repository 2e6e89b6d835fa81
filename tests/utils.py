"""Helpers shared by the tests (checks shared with the tools live in
:mod:`mmvitmix.testing`)."""
import importlib.util
import re
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
#: golden fixtures of the official implementations (../shared/golden)
GOLDEN_DIR = REPO_ROOT.parent / 'shared' / 'golden'

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
