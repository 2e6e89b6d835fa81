"""model-index.yml and the per-backbone metafiles (OpenMMLab format).

- every metafile the index imports parses and has the required fields;
- every listed ``Config`` exists, and every config under ``configs/``
  (``_base_`` folders excepted) is listed, or is a CPU demo config
  (``configs/demo``, allow-listed: smoke tests on the bundled synthetic data,
  no model to index); a config added without an entry fails here by name;
- every listed config loads and names a model its scope registers, with an
  mmvitmix backbone (building and a train step of every config:
  ``tests/test_configs/test_configs.py``);
- an installed mmvitmix carries ``.mim`` (configs, tools, model-index.yml),
  which is how ``mim train/test mmvitmix CONFIG`` finds ``tools/train.py``.
"""
import importlib
from pathlib import Path

import pytest
import yaml
from mmengine.config import Config
from mmengine.registry import MODELS
from mmengine.utils import import_modules_from_strings

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_ROOT = REPO_ROOT / 'configs'
INDEX = REPO_ROOT / 'model-index.yml'
#: configs that are deliberately not in the index (folders or files,
#: relative to configs/)
NOT_INDEXED = ('demo/', )
SCOPE_MODULES = {
    'mmdet': 'mmdet.utils',
    'mmseg': 'mmseg.utils',
    'mmpretrain': 'mmpretrain.utils',
}
TASKS = {
    'Object Detection', 'Instance Segmentation', 'Semantic Segmentation',
    'Image Classification'
}


def load_index():
    index = yaml.safe_load(INDEX.read_text())
    assert list(index) == ['Import'], f'unexpected keys {list(index)}'
    collections, models = [], []
    for rel in index['Import']:
        meta = yaml.safe_load((REPO_ROOT / rel).read_text())
        collections += meta['Collections']
        models += [dict(m, _metafile=rel) for m in meta['Models']]
    return collections, models


COLLECTIONS, MODELS_LISTED = load_index()


def shipped_configs():
    return sorted(
        str(p.relative_to(CONFIG_ROOT)) for p in CONFIG_ROOT.rglob('*.py')
        if '_base_' not in p.relative_to(CONFIG_ROOT).parts)


def test_metafiles_imported():
    """Each backbone folder has a metafile and the index imports it."""
    imported = set(yaml.safe_load(INDEX.read_text())['Import'])
    on_disk = {
        str(p.relative_to(REPO_ROOT))
        for p in CONFIG_ROOT.glob('*/metafile.yml')
    }
    assert imported == on_disk


def test_collections():
    names = [c['Name'] for c in COLLECTIONS]
    assert len(names) == len(set(names)), names
    for c in COLLECTIONS:
        assert c['Paper']['URL'].startswith('https://'), c['Name']
        assert (REPO_ROOT / c['README']).is_file(), c['README']


def test_models_fields():
    collections = {c['Name'] for c in COLLECTIONS}
    names = [m['Name'] for m in MODELS_LISTED]
    dup = sorted({n for n in names if names.count(n) > 1})
    assert not dup, f'duplicate model names: {dup}'
    for m in MODELS_LISTED:
        where = f"{m['_metafile']}: {m['Name']}"
        assert m['In Collection'] in collections, where
        assert m['Name'] == Path(m['Config']).stem, where
        md = m['Metadata']
        for key in ('Training Data', 'Training Resources', 'Batch Size',
                    'Architecture'):
            assert md.get(key), f'{where}: Metadata.{key} missing'
        assert ('Epochs' in md) != ('Iterations' in md), (
            f'{where}: exactly one of Metadata.Epochs / Iterations')
        for key in ('Parameters', 'FLOPs'):
            assert key not in md or isinstance(md[key], int), where
        # no mmvitmix-trained checkpoint exists: a Weights link would claim
        # one; published numbers must say where they come from
        assert 'Weights' not in m, f'{where}: no mmvitmix weights exist'
        for result in m.get('Results', []):
            assert result['Task'] in TASKS, where
            assert result['Dataset'], where
            assert result['Metrics'] and all(
                isinstance(v, (int, float))
                for v in result['Metrics'].values()), where
        if m.get('Results'):
            assert 'not reproduced' in m['Results Source'], where


def test_listed_configs_exist():
    missing = sorted(m['Config'] for m in MODELS_LISTED
                     if not (REPO_ROOT / m['Config']).is_file())
    assert not missing, f'listed configs that do not exist: {missing}'


def test_every_shipped_config_listed():
    listed = {
        str(Path(m['Config']).relative_to('configs'))
        for m in MODELS_LISTED
    }
    unlisted = [
        c for c in shipped_configs()
        if c not in listed and not c.startswith(NOT_INDEXED)
    ]
    assert not unlisted, (
        'configs with no entry in configs/<backbone>/metafile.yml: '
        f'{unlisted}')


def load_listed(config):
    cfg = Config.fromfile(str(REPO_ROOT / config))
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    scope = cfg.get('default_scope')
    assert scope in SCOPE_MODULES, f'{config}: default_scope {scope!r}'
    importlib.import_module(SCOPE_MODULES[scope]).register_all_modules(
        init_default_scope=False)
    return cfg, scope


@pytest.mark.slow  # loads every listed config (about 1 s each)
def test_listed_configs_load_and_name_registered_models():
    """Each listed config loads and names a model type (and an mmvitmix
    backbone) that its scope's registry knows. Building and training one
    step of every config is tests/test_configs/test_configs.py's job."""
    for config in sorted(m['Config'] for m in MODELS_LISTED):
        cfg, scope = load_listed(config)
        registry = importlib.import_module(f'{scope}.registry').MODELS
        assert registry.get(cfg.model.type) is not None, (config, scope)
        backbone = cfg.model.get('backbone', {}).get('type', '')
        assert backbone.startswith('mmvitmix.'), (config, backbone)
        assert MODELS.get(backbone) is not None, (config, backbone)


def test_installed_package_has_mim():
    """``mmvitmix/.mim`` of the installed package: what ``mim`` reads."""
    from importlib import metadata
    try:
        metadata.distribution('mmvitmix')
    except metadata.PackageNotFoundError:
        pytest.skip('mmvitmix is not installed (pip install -e .)')
    import mmvitmix
    pkg = Path(mmvitmix.__file__).resolve().parent
    if pkg != (REPO_ROOT / 'mmvitmix').resolve():
        pytest.skip(f'the mmvitmix imported here is not this checkout\'s '
                    f'({pkg})')
    mim = pkg / '.mim'
    if not mim.exists():
        pytest.skip('mmvitmix/.mim is made by setup.py at install time; '
                    'this checkout was installed before it existed: '
                    'MMVITMIX_BUILD_OPS=0 pip install --no-build-isolation '
                    '--no-deps --use-pep517 -e .')
    for name in ('configs', 'tools', 'model-index.yml'):
        assert (mim / name).exists(), f'{mim / name} missing'
    assert (mim / 'tools' / 'train.py').is_file()
    assert (mim / 'tools' / 'test.py').is_file()
    assert (mim / 'configs' / 'rmt' / 'metafile.yml').is_file()
