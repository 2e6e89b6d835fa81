"""tools/model_converters/*2mmvitmix.py on the official-layout golden files."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmvitmix.apis import ToolError
from mmvitmix.models import converters
from tests.test_tools._driver import run_tool_cases

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / '..' / 'shared' / 'golden'
CONVERTERS = REPO / 'tools' / 'model_converters'


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    return env


def _run(script, *args):
    return subprocess.run([sys.executable, str(CONVERTERS / script), *args],
                          env=_env(),
                          capture_output=True,
                          text=True,
                          timeout=300)


def _golden(name):
    path = GOLDEN / name
    if not path.is_file():
        pytest.skip(f'golden fixture {path} is not present')
    return torch.load(path, map_location='cpu')


def _check_rmt_output(data, src, dst, stdout):
    from mmvitmix.models import RMT

    official = data['checkpoint']['model']
    classifier = sorted(
        k for k in official if k.startswith(('proj.', 'norm.', 'head.')))
    assert classifier, 'the golden file should carry the ImageNet classifier'
    out = torch.load(dst, map_location='cpu')
    assert set(out) == {'state_dict', 'meta'}
    converted = out['state_dict']
    assert f'converted {len(converted)} keys' in stdout
    assert f'dropped {len(classifier)} keys' in stdout
    assert out['meta']['dropped_keys'] == classifier
    assert out['meta']['source'] == str(Path(src).resolve())
    assert out['meta']['converter'].endswith('convert_rmt')

    model = RMT(arch=dict(data['config']))
    result = model.load_state_dict(converted, strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys, 'output norms should be missing'
    assert all(k.split('.')[0] in {f'norm{i}' for i in range(4)}
               for k in result.missing_keys), result.missing_keys
    # values travel unchanged: the stem's first conv is a pure rename
    assert torch.equal(model.state_dict()['stem.0.weight'],
                       official['patch_embed.proj.0.weight'])

    # the converted file also loads through init_cfg (already-converted path)
    model2 = RMT(
        arch=dict(data['config']),
        init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model2.init_weights()
    for key, value in converted.items():
        assert torch.equal(model2.state_dict()[key], value), key


def _save_official(data, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data['checkpoint'], path)  # {'model': VisRetNet state dict}
    return path


@pytest.mark.slow  # converter CLIs in subprocesses / full-size detectors
def test_rmt2mmvitmix_cli(tmp_path):
    """The script itself, as a user runs it."""
    data = _golden('rmt_tiny_axial.pt')
    src = _save_official(data, tmp_path / 'official' / 'rmt.pth')
    dst = tmp_path / 'nested' / 'out' / 'rmt_mmvitmix.pth'
    proc = _run('rmt2mmvitmix.py', str(src), str(dst))
    assert proc.returncode == 0, proc.stderr
    _check_rmt_output(data, src, dst, proc.stdout)


def test_rmt2mmvitmix_whole_ls(tmp_path, capsys):
    """Whole retention + layer scale, through the shared main() in-process."""
    from mmvitmix.models.backbones.rmt import convert_rmt

    data = _golden('rmt_tiny_whole_ls.pt')
    src = _save_official(data, tmp_path / 'rmt.pth')
    dst = tmp_path / 'a' / 'b' / 'out.pth'
    summary = converters.main(convert_rmt, 'convert', [str(src), str(dst)])
    assert summary['dst'] == str(dst)
    _check_rmt_output(data, src, dst, capsys.readouterr().out)


def test_converter_errors(tmp_path, capsys):
    from mmvitmix.models.backbones.rmt import convert_rmt

    main = converters.main
    out = tmp_path / 'out.pth'
    with pytest.raises(ToolError, match='does not exist'):
        main(convert_rmt, 'x', [str(tmp_path / 'missing.pth'), str(out)])

    # a file that pickles a Python object besides tensors needs --allow-pickle
    data = _golden('rmt_tiny_axial.pt')
    src = tmp_path / 'with_args.pth'
    torch.save({'model': data['checkpoint']['model'],
                'args': argparse.Namespace(lr=0.1)}, src)
    with pytest.raises(ToolError, match='--allow-pickle'):
        main(convert_rmt, 'x', [str(src), str(out)])
    assert not out.exists()
    main(convert_rmt, 'x', [str(src), str(out), '--allow-pickle'])
    assert out.is_file()

    # an unknown key is an error, not a silent drop
    bad = dict(data['checkpoint']['model'])
    bad['layers.0.blocks.0.mystery.weight'] = torch.zeros(1)
    src = tmp_path / 'bad.pth'
    torch.save({'model': bad}, src)
    with pytest.raises(KeyError, match='mystery'):
        main(convert_rmt, 'x', [str(src), str(tmp_path / 'bad_out.pth')])
    assert not (tmp_path / 'bad_out.pth').exists()

    # the CLI's own usage error
    with pytest.raises(SystemExit):
        main(convert_rmt, 'x', [str(src)])
    assert 'usage:' in capsys.readouterr().err


def _official_downstream_file(tmp_path, config, release='rmt_t'):
    """A file in the layout of the authors' trained detectors / segmentors
    (qhfan/RMT detect/ and segmentation/, mmdet 2.x / mmseg 0.x): backbone
    keys of the official release (classifier removed) plus ``extra_norms``
    of all four stages, and the neck / head keys of the matching model,
    whose names mmdet 3.x / mmseg 1.x kept. Random values."""
    import json

    from mmengine.registry import MODELS, init_default_scope

    from mmvitmix.apis import load_config
    with open(GOLDEN / 'official_checkpoints.json') as f:
        table = json.load(f)[release]
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in table['checkpoint_keys'].items():
        if not key.startswith(('proj.', 'norm.', 'head.', 'aux_head.')):
            state['backbone.' + key] = torch.randn(shape, generator=gen)
    for i, dims in enumerate(table['config']['embed_dims']):
        state[f'backbone.extra_norms.{i}.weight'] = torch.randn(
            dims, generator=gen)
        state[f'backbone.extra_norms.{i}.bias'] = torch.randn(
            dims, generator=gen)
    cfg = load_config(str(REPO / config))
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    for key, value in model.state_dict().items():
        if not key.startswith('backbone.'):
            state[key] = torch.randn(value.shape, generator=gen).to(
                value.dtype)
    path = tmp_path / 'official_downstream.pth'
    torch.save({'state_dict': state, 'meta': {'epoch': 12}}, path)
    return path, state, model


@pytest.mark.parametrize('config', [
    'configs/rmt/retinanet_rmt_t_1x.py',
    'configs/rmt/maskrcnn_rmt_t_1x.py',
    'configs/rmt/fpn_rmt_t_80k_ade20k.py',
])
@pytest.mark.slow  # converter CLIs in subprocesses / full-size detectors
def test_rmt2mmvitmix_whole_model(tmp_path, config):
    """The authors' downstream files load into our config with no missing
    or unexpected key; RetinaNet's unused stage-0 norm is dropped by name."""
    src, state, model = _official_downstream_file(tmp_path, config)
    dst = tmp_path / 'converted.pth'
    res = _run('rmt2mmvitmix.py', str(src), str(dst), '--config',
               str(REPO / config))
    assert res.returncode == 0, res.stderr
    assert 'whole model' in res.stdout and 'checked against' in res.stdout
    converted = torch.load(dst, map_location='cpu')['state_dict']
    report = model.load_state_dict(converted, strict=True)
    assert not report.missing_keys and not report.unexpected_keys
    for i in model.backbone.out_indices:
        assert torch.equal(converted[f'backbone.norm{i}.weight'],
                           state[f'backbone.extra_norms.{i}.weight'])
    head_key = next(k for k in state if not k.startswith('backbone.'))
    assert torch.equal(converted[head_key], state[head_key])
    dropped = torch.load(dst, map_location='cpu')['meta']['dropped_keys']
    unused = [i for i in range(4) if i not in model.backbone.out_indices]
    assert dropped == sorted(f'backbone.extra_norms.{i}.{p}' for i in unused
                             for p in ('bias', 'weight'))


@pytest.mark.slow  # converter CLIs in subprocesses / full-size detectors
def test_rmt2mmvitmix_whole_model_mismatch_is_an_error(tmp_path):
    """A detector file checked against a config it does not fit: error,
    nothing written."""
    src, _, _ = _official_downstream_file(tmp_path,
                                          'configs/rmt/retinanet_rmt_t_1x.py')
    dst = tmp_path / 'converted.pth'
    res = _run('rmt2mmvitmix.py', str(src), str(dst), '--config',
               str(REPO / 'configs/rmt/maskrcnn_rmt_t_1x.py'))
    assert res.returncode != 0
    assert 'does not fit' in res.stderr and 'missing' in res.stderr
    assert not dst.exists()


# ------------------------------------------------- input safety, atomicity
@pytest.mark.parametrize('script', [
    'rmt2mmvitmix.py', 'rest2mmvitmix.py', 'container2mmvitmix.py',
    'riformer2mmvitmix.py'
])
@pytest.mark.slow  # converter CLIs in subprocesses / full-size detectors
def test_converter_refuses_to_overwrite_its_input(tmp_path, script):
    src = tmp_path / 'official.pth'
    torch.save({'model': {'x': torch.zeros(1)}}, src)
    before = src.read_bytes()
    link = tmp_path / 'link.pth'
    link.symlink_to(src)
    for dst in (src, link):
        proc = _run(script, str(src), str(dst))
        assert proc.returncode != 0
        assert 'is the input file' in proc.stderr, proc.stderr[-2000:]
    assert src.read_bytes() == before


def test_converter_writes_atomically(tmp_path, monkeypatch):
    """A failure while writing leaves the old target and no temporary."""
    from mmvitmix.models.backbones.rmt import RMT, convert_rmt
    src = tmp_path / 'official.pth'
    torch.save({'model': RMT(arch='t').state_dict()}, src)
    dst = tmp_path / 'out' / 'rmt_t.pth'
    dst.parent.mkdir()
    dst.write_bytes(b'previous result')

    real_save = torch.save

    def crash_half_way(obj, f, *args, **kwargs):
        real_save({'partial': torch.zeros(1000)}, f)  # some bytes, then
        raise KeyboardInterrupt('interrupted while saving')

    monkeypatch.setattr(torch, 'save', crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        converters.convert_file(str(src), str(dst), convert_rmt)
    assert dst.read_bytes() == b'previous result'
    assert sorted(p.name for p in dst.parent.iterdir()) == ['rmt_t.pth']

    monkeypatch.setattr(torch, 'save', real_save)
    summary = converters.convert_file(str(src), str(dst), convert_rmt)
    assert summary['converted'] > 0
    assert 'state_dict' in torch.load(dst, map_location='cpu')
    assert sorted(p.name for p in dst.parent.iterdir()) == ['rmt_t.pth']


# ------------------------------------------- the family of what is converted
#: converter function -> (the family it takes, the script)
FAMILY_OF = {
    'convert_rmt': ('RMT', 'rmt2mmvitmix.py'),
    'convert_rest': ('ResT', 'rest2mmvitmix.py'),
    'convert_container': ('ContainerLight', 'container2mmvitmix.py'),
    'convert_riformer': ('RIFormer', 'riformer2mmvitmix.py'),
}
#: golden file of each family's official layout
GOLDEN_OF = {
    'RMT': 'rmt_tiny_axial.pt',
    'ResT': 'rest_tiny.pt',
    'ContainerLight': 'container_tiny.pt',
    'RIFormer': 'riformer_tiny.pt',
}


def _converter(name):
    from mmvitmix.models import backbones
    return getattr(backbones, name)


def _family_files(root):
    """Each family's golden checkpoint in the official layout and converted
    (this project's layout), saved as files: {(family, layout): path}."""
    files = {}
    for family, golden in GOLDEN_OF.items():
        data = _golden(golden)
        official = root / f'{family}_official.pth'
        torch.save(data['checkpoint'], official)
        convert = next(_converter(f) for f, (fam, _) in FAMILY_OF.items()
                       if fam == family)
        ours = root / f'{family}_converted.pth'
        torch.save({'state_dict': convert(data['checkpoint'])}, ours)
        files[(family, 'official')] = official
        files[(family, 'mmvitmix')] = ours
    return files


@pytest.mark.parametrize('fn', sorted(FAMILY_OF))
def test_convert_file_refuses_another_family(tmp_path, fn):
    """Every other family's file, official and already converted: refused
    naming what it is and the converter that takes it; nothing written.
    The family's own files convert (and the summary says what they are)."""
    from mmvitmix.models.converters.identify import FAMILIES
    family, _ = FAMILY_OF[fn]
    convert = _converter(fn)
    for (other, layout), src in _family_files(tmp_path).items():
        dst = tmp_path / f'out_{other}_{layout}.pth'
        if other == family:
            summary = converters.convert_file(str(src), str(dst), convert)
            assert summary['source'].startswith(
                f'{FAMILIES[family][3]} {FAMILIES[family][0]} checkpoint '
                f'({layout} layout')
            continue
        with pytest.raises(ToolError) as info:
            converters.convert_file(str(src), str(dst), convert)
        message = str(info.value)
        assert message.startswith(
            f'{src} is {FAMILIES[other][3]} {FAMILIES[other][0]} checkpoint '
            f'({layout} layout'), message
        assert f'not {FAMILIES[family][0]}' in message
        if layout == 'official':
            assert FAMILIES[other][2] in message  # the converter to use
        else:
            assert 'no conversion needed' in message
        assert not dst.exists()


def test_load_source_refuses_unreadable_and_foreign_files(tmp_path):
    """Random bytes (64 fixed seeds): whatever torch raises, the file is
    named as unreadable; a file of no known family is refused by name."""
    import random

    from mmvitmix.models.backbones import convert_rmt
    path = tmp_path / 'random.pth'
    for seed in range(64):
        path.write_bytes(random.Random(seed).randbytes(4096))
        with pytest.raises(ToolError, match=f"cannot read source checkpoint "
                           f"'{path}': not a PyTorch checkpoint"):
            converters.load_source(str(path))
    torch.save(torch.zeros(3), path)
    with pytest.raises(ToolError, match='holds a Tensor, not a checkpoint'):
        converters.load_source(str(path))
    with pytest.raises(ToolError, match='is not a file'):
        converters.load_source(str(tmp_path))
    # a torchvision ResNet-18 state dict, as tools/test.py users hand it
    torch.save({'state_dict': {'conv1.weight': torch.zeros(2, 3, 7, 7),
                               'layer1.0.bn1.running_mean': torch.zeros(2),
                               'fc.weight': torch.zeros(10, 2)}}, path)
    dst = tmp_path / 'out.pth'
    with pytest.raises(ToolError, match=r"is not an RMT checkpoint: none of "
                       r"its 3 keys belongs to a backbone mmvitmix knows"):
        converters.convert_file(str(path), str(dst), convert_rmt)
    assert not dst.exists()


@pytest.fixture(scope='module')
def mistake_files(tmp_path_factory):
    """The mistakes a user makes, as files, shared by the scripts' tests."""
    import random
    root = tmp_path_factory.mktemp('mistakes')
    files = _family_files(root)
    unreadable = root / 'random.pth'
    unreadable.write_bytes(random.Random(0).randbytes(4096))
    import torchvision
    resnet = root / 'resnet18.pth'
    torch.save({'state_dict': torchvision.models.resnet18().state_dict()},
               resnet)
    return root, files, unreadable, resnet


@pytest.mark.parametrize('fn', sorted(FAMILY_OF))
@pytest.mark.slow  # one subprocess per converter script
def test_converter_script_mistakes(tmp_path, mistake_files, fn):
    """The script as a user runs it, on each mistake (one process, several
    cases): exit status != 0, one ``error:`` line naming the problem, no
    traceback, nothing written."""
    from mmvitmix.models.converters.identify import FAMILIES
    root, files, unreadable, resnet = mistake_files
    family, script = FAMILY_OF[fn]
    other = next(f for f in GOLDEN_OF if f != family)
    other_v1 = 'RMT' if family != 'RMT' else 'ResT'
    cases = [
        (str(root / 'missing.pth'), "source checkpoint '{}' does not exist"
         .format(root / 'missing.pth')),
        (str(unreadable), f"cannot read source checkpoint '{unreadable}': "
         'not a PyTorch checkpoint file, or a damaged one'),
        (str(resnet), f'{resnet} is not {FAMILIES[family][3]} '
         f'{FAMILIES[family][0]}'),
        (str(files[(other, 'official')]),
         f"{files[(other, 'official')]} is {FAMILIES[other][3]} "
         f'{FAMILIES[other][0]} checkpoint (official layout)'),
        (str(files[(other_v1, 'mmvitmix')]),
         f"{files[(other_v1, 'mmvitmix')]} is {FAMILIES[other_v1][3]} "
         f'{FAMILIES[other_v1][0]} checkpoint (mmvitmix layout)'),
    ]
    argvs = [[src, str(tmp_path / f'out{i}.pth')]
             for i, (src, _) in enumerate(cases)]
    results = [dict(code=code, stderr=err) for code, _, err in
               run_tool_cases(CONVERTERS / script, argvs, timeout=300)]
    for (src, expected), argv, result in zip(cases, argvs, results):
        assert result['code'] != 0, result
        errors = [ln for ln in result['stderr'].splitlines()
                  if ln.startswith('error:')]
        assert len(errors) == 1, result['stderr'][-2000:]
        assert expected in errors[0], (expected, errors[0])
        assert 'Traceback' not in result['stderr']
        assert not Path(argv[1]).exists(), argv
