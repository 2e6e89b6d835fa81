"""Every tool that loads a checkpoint or takes a shape, run as a user would
(its ``__main__``, in a subprocess) on the usual mistakes: a wrong path, an
unreadable checkpoint (random bytes), a foreign one (a torchvision ResNet-18
state dict), one of another backbone family (Container-Light weights given
to an RMT or RIFormer config), a partial one, an impossible shape, an output
path that is a folder (get_flops and the benchmarks:
tests/test_tools/test_tool_arguments.py). Each must exit non-zero with one
``error:`` line naming the problem, and write nothing; a partial checkpoint
passes when ``--min-coverage`` is lowered (docs/reliability.md).

One subprocess per tool runs all its cases (tests/test_tools/_driver.py).
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_tools._driver import run_tool_cases
from tests.utils import REPO_ROOT, tiny_arch

pytestmark = pytest.mark.slow  # one Python start-up and model builds a tool

RMT_DEMO = REPO_ROOT / 'configs' / 'demo' / 'maskrcnn_rmt_t_demo.py'
RIFORMER_DEMO = (REPO_ROOT / 'configs' / 'demo' /
                 'maskrcnn_riformer_s12_demo.py')
COCO_VAL = REPO_ROOT / 'data' / 'demo' / 'coco' / 'val'


def _model_state(config: Path, keep=None) -> dict:
    """The state dict of ``config``'s model (random init); only the keys
    starting with ``keep`` when given."""
    from mmengine.registry import MODELS, DefaultScope

    from mmvitmix.apis import load_config
    cfg = load_config(str(config))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    state = model.state_dict()
    if keep:
        state = {k: v for k, v in state.items() if k.startswith(keep)}
    return state


def _resnet18_state() -> dict:
    try:
        import torchvision
        return torchvision.models.resnet18().state_dict()
    except ImportError:  # the keys and shapes of torchvision's ResNet-18
        shapes = {'conv1.weight': (64, 3, 7, 7), 'bn1.weight': (64, ),
                  'bn1.bias': (64, ), 'fc.weight': (1000, 512),
                  'fc.bias': (1000, )}
        for layer, (cin, cout) in enumerate([(64, 64), (64, 128),
                                             (128, 256), (256, 512)], 1):
            for block in range(2):
                c0 = cin if block == 0 else cout
                prefix = f'layer{layer}.{block}.'
                shapes[prefix + 'conv1.weight'] = (cout, c0, 3, 3)
                shapes[prefix + 'conv2.weight'] = (cout, cout, 3, 3)
                for bn in ('bn1', 'bn2'):
                    shapes[f'{prefix}{bn}.weight'] = (cout, )
                    shapes[f'{prefix}{bn}.bias'] = (cout, )
        return {k: torch.randn(s) for k, s in shapes.items()}


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """The checkpoints and inputs of the mistakes, written once."""
    from mmvitmix.models import RMT, ContainerLight
    root = tmp_path_factory.mktemp('tool_refusals')
    paths = dict(root=root, missing=root / 'no_such.pth',
                 folder=root / 'a_folder', random=root / 'random.pth',
                 resnet18=root / 'resnet18.pth',
                 container=root / 'container_light.pth',
                 rmt_partial=root / 'rmt_demo_backbone_only.pth',
                 riformer_partial=root / 'riformer_demo_backbone_only.pth',
                 rmt_stage0=root / 'rmt_t_stage0.pth',
                 bad_image=root / 'not_an_image.png')
    paths['folder'].mkdir()
    paths['random'].write_bytes(np.random.default_rng(0).bytes(4096))
    paths['bad_image'].write_bytes(np.random.default_rng(1).bytes(512))
    torch.save({'state_dict': _resnet18_state()}, paths['resnet18'])
    # another family: a (tiny) Container-Light detector's backbone
    container = ContainerLight(arch=tiny_arch('ContainerLight')).state_dict()
    torch.save({'state_dict': {f'backbone.{k}': v
                               for k, v in container.items()}},
               paths['container'])
    # the right family, only part of the model: the backbone of the demo
    # detectors (about 80 % of their parameters)
    torch.save({'state_dict': _model_state(RMT_DEMO, 'backbone.')},
               paths['rmt_partial'])
    torch.save({'state_dict': _model_state(RIFORMER_DEMO, 'backbone.')},
               paths['riformer_partial'])
    rmt = RMT(arch='t', out_norm_cfg=None).state_dict()
    torch.save({k: v for k, v in rmt.items() if k.startswith(('stem',
                                                              'stages.0.'))},
               paths['rmt_stage0'])
    return paths


def run_cases(tool: str, cases: list, tmp_path: Path) -> dict:
    """Run ``cases`` (name, argv) of ``tool`` in one subprocess, from the
    repository root (the configs name data/ relative to it); name ->
    ``{"code", "stdout", "stderr"}``."""
    results = run_tool_cases(tool, [[str(a) for a in argv]
                                    for _, argv in cases], cwd=REPO_ROOT,
                             timeout=900)
    return {name: dict(code=code, stdout=out, stderr=err)
            for (name, _), (code, out, err) in zip(cases, results)}


def refused(result: dict, *needles: str) -> list:
    """Problems with a refusal: exit status 0, not exactly one ``error:``
    line, a traceback, or a needle missing from the error line."""
    problems = []
    if result['code'] in (0, None) or not isinstance(result['code'], int):
        problems.append(f'exit status {result["code"]!r}')
    lines = [line for line in result['stderr'].splitlines()
             if line.startswith('error:')]
    if len(lines) != 1:
        problems.append(f'{len(lines)} error: lines')
    if 'Traceback' in result['stderr']:
        problems.append('a traceback')
    line = lines[0] if lines else ''
    problems += [f'{n!r} not in the message' for n in needles
                 if n not in line]
    return problems


def check(results: dict, expected: dict, written=()) -> None:
    """Every case of ``expected`` (name -> needles) refused; nothing in
    ``written`` exists."""
    failures = []
    for name, needles in expected.items():
        problems = refused(results[name], *needles)
        if problems:
            failures.append(f'{name}: {"; ".join(problems)}\n  stderr: '
                            f'{results[name]["stderr"][-1500:]}')
    for path in written:
        if Path(path).exists():
            failures.append(f'{path} was written')
    assert not failures, '\n'.join(failures)


COMMON = {  # case -> what the one line must say
    'missing': ['does not exist'],
    'random': ['cannot read checkpoint', 'not a PyTorch checkpoint file'],
    'resnet18': ['no parameter of the model could be loaded', 'conv1.weight'],
    'container': ['no parameter of the model could be loaded',
                  'the file is a Container-Light checkpoint'],
}


def test_test_tool(files, tmp_path):
    work = tmp_path / 'work'
    cfg = str(RMT_DEMO)
    base = ['--work-dir', work]
    cases = [(name, [cfg, files[name], *base]) for name in COMMON]
    cases += [
        ('partial', [cfg, files['rmt_partial'], *base]),
        ('config', [tmp_path / 'no_config.py', files['rmt_partial'], *base]),
        ('out_folder', [cfg, files['rmt_partial'], '--out', files['folder'],
                        *base]),
        ('coverage_range', [cfg, files['rmt_partial'], '--min-coverage',
                            '1.5', *base]),
        ('accepted', [cfg, files['rmt_partial'], '--min-coverage', '0.5',
                      '--work-dir', tmp_path / 'ok', '--cfg-options',
                      'test_dataloader.dataset.indices=2']),
    ]
    results = run_cases('tools/test.py', cases, tmp_path)
    expected = dict(COMMON)
    expected.update(
        partial=['of the model\'s parameters', 'below min_coverage=0.9',
                 'pass --min-coverage 0.'],
        config=['config file', 'does not exist'],
        out_folder=['--out', 'is an existing folder'],
        coverage_range=['--min-coverage must be a number in [0, 1]'])
    check(results, expected, written=[work])
    ok = results['accepted']
    assert ok['code'] == 0, ok['stderr'][-3000:]
    assert (tmp_path / 'ok').is_dir()


def test_train_tool(files, tmp_path):
    work = tmp_path / 'work'
    cfg = str(RMT_DEMO)
    base = ['--work-dir', work]
    cases = [
        ('load_from_foreign', [cfg, *base, '--cfg-options',
                               f'load_from={files["resnet18"]}']),
        ('load_from_random', [cfg, *base, '--cfg-options',
                              f'load_from={files["random"]}']),
        ('load_from_partial', [cfg, *base, '--cfg-options',
                               f'load_from={files["rmt_partial"]}']),
        ('resume_other_family', [cfg, *base, '--resume',
                                 files['container']]),
        ('resume_missing', [cfg, *base, '--resume', files['missing']]),
        ('config', [tmp_path / 'no_config.py', *base]),
        ('coverage_range', [cfg, *base, '--min-coverage', '-0.1']),
    ]
    results = run_cases('tools/train.py', cases, tmp_path)
    check(results, {
        'load_from_foreign': ['load_from: ', 'no parameter of the model'],
        'load_from_random': ['load_from: ', 'cannot read checkpoint'],
        'load_from_partial': ['load_from: ', 'below min_coverage=0.9',
                              '--min-coverage'],
        'resume_other_family': ['--resume: ', 'no parameter of the model'],
        'resume_missing': ['does not exist'],
        'config': ['config file', 'does not exist'],
        'coverage_range': ['--min-coverage must be a number in [0, 1]'],
    }, written=[work])


@pytest.mark.skipif(not COCO_VAL.is_dir(), reason='no demo data')
def test_image_demo(files, tmp_path):
    image = sorted(COCO_VAL.glob('*.jpg'))[0]
    out = tmp_path / 'drawn.png'
    cfg = str(RMT_DEMO)
    cases = [(name, [image, cfg, files[name], '--out-file', out])
             for name in COMMON]
    cases += [
        ('partial', [image, cfg, files['rmt_partial'], '--out-file', out]),
        ('image', [tmp_path / 'no.png', cfg, '--out-file', out]),
        ('bad_image', [files['bad_image'], cfg, '--out-file', out]),
        ('out_folder', [image, cfg, '--out-file', files['folder']]),
        ('score_range', [image, cfg, '--out-file', out, '--score-thr', '2']),
        ('accepted', [image, cfg, files['rmt_partial'], '--out-file',
                      tmp_path / 'ok.png', '--min-coverage', '0.5']),
    ]
    results = run_cases('demo/image_demo.py', cases, tmp_path)
    expected = dict(COMMON)
    expected.update(
        partial=['below min_coverage=0.9'],
        image=['image', 'does not exist'],
        bad_image=['cannot be decoded'],
        out_folder=['--out-file', 'is an existing folder'],
        score_range=['--score-thr must be a number in [0, 1]'])
    check(results, expected, written=[out])
    ok = results['accepted']
    assert ok['code'] == 0, ok['stderr'][-3000:]
    assert (tmp_path / 'ok.png').stat().st_size > 0


def test_export_onnx(files, tmp_path):
    out = tmp_path / 'model.onnx'
    cfg = str(RMT_DEMO)
    cases = [(name, [cfg, files[name], out, '--shape', '64', '64'])
             for name in COMMON]
    cases += [
        ('partial', [cfg, files['rmt_partial'], out, '--shape', '64', '64']),
        ('shape', [cfg, out, '--shape', '-8', '64']),
        ('small_shape', ['RMT', '--arch', 't', out, '--shape', '16', '64']),
        ('out_folder', [cfg, files['folder']]),
        ('target', ['NoSuchNet', out]),
        ('backbone_foreign', ['RMT', '--arch', 't', files['resnet18'], out,
                              '--shape', '64', '64']),
        ('backbone_random', ['RMT', '--arch', 't', files['random'], out,
                             '--shape', '64', '64']),
    ]
    results = run_cases('tools/deploy/export_onnx.py', cases, tmp_path)
    expected = dict(COMMON)
    expected['missing'] = ['checkpoint', 'does not exist']
    expected.update(
        partial=['below min_coverage=0.9'],
        shape=['--shape -8 64', 'at least 32'],
        small_shape=['--shape 16 64', 'at least 32'],
        out_folder=['is an existing folder'],
        target=["unknown target 'NoSuchNet'", 'RMT'],
        # the backbone's family check, with the file
        backbone_foreign=['is not an RMT checkpoint', 'resnet18.pth'],
        backbone_random=['RMT: cannot read checkpoint'])
    check(results, expected, written=[out])


def test_reparameterize(files, tmp_path):
    out = tmp_path / 'deploy.pth'
    cfg = str(RIFORMER_DEMO)
    small = ['--shape', '64', '64']
    cases = [(name, [cfg, files[name], out, *small]) for name in COMMON]
    cases += [
        ('partial', [cfg, files['riformer_partial'], out, *small]),
        ('shape', [cfg, files['riformer_partial'], out, '--shape', '-8',
                   '64']),
        ('out_folder', [cfg, files['riformer_partial'], files['folder']]),
        ('accepted', [cfg, files['riformer_partial'], tmp_path / 'ok.pth',
                      '--min-coverage', '0.5', *small]),
    ]
    results = run_cases('tools/deploy/reparameterize.py', cases, tmp_path)
    expected = dict(COMMON)
    expected['missing'] = ['checkpoint', 'does not exist']
    expected.update(
        partial=['below min_coverage=0.9'],
        shape=['--shape -8 64', 'at least 32'],
        out_folder=['is an existing folder'])
    check(results, expected, written=[out])
    ok = results['accepted']
    assert ok['code'] == 0, ok['stderr'][-3000:]
    assert (tmp_path / 'ok.pth').is_file()


def test_visualize_decay(files, tmp_path):
    out = tmp_path / 'decay.png'
    base = ['--arch', 't', '--out', out, '--size', '64']
    cases = [(name, [*base, '--checkpoint', files[name]])
             for name in ('missing', 'random', 'resnet18', 'container')]
    cases += [
        ('partial', [*base, '--checkpoint', files['rmt_stage0']]),
        ('size', ['--size', '-8', '--out', out]),
        ('stage', ['--stage', '4', '--out', out]),
        ('out_folder', ['--out', files['folder']]),
        ('accepted', ['--arch', 't', '--size', '64', '--checkpoint',
                      files['rmt_stage0'], '--min-coverage', '0.01',
                      '--out', tmp_path / 'ok.png']),
    ]
    results = run_cases('tools/analysis_tools/visualize_decay.py', cases,
                        tmp_path)
    check(results, {
        'missing': ['does not exist'],
        'random': ['cannot read checkpoint', 'not a PyTorch checkpoint'],
        # the backbone's family check, with the file
        'resnet18': ['is not an RMT checkpoint', 'resnet18.pth'],
        'container': ['is a Container-Light checkpoint',
                      'container_light.pth'],
        'partial': ["RMT: ", "of the backbone's parameters",
                    'below min_coverage=0.9', '--min-coverage 0.01'],
        'size': ['--size must be at least 32'],
        'stage': ['--stage must be in 0..3'],
        'out_folder': ['is an existing folder'],
    }, written=[out])
    ok = results['accepted']
    assert ok['code'] == 0, ok['stderr'][-3000:]
    assert (tmp_path / 'ok.png').stat().st_size > 0
