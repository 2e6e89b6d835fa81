"""Every analysis, data and fixture tool refuses bad arguments as a user
meets them: run as ``python tools/...`` (the script's real ``__main__``),
each plausible mistake gives a non-zero exit, exactly one ``error:`` line on
stderr that names the problem and the accepted values, no traceback, and
writes nothing. One process per tool runs all its cases
(:mod:`tests.test_tools._driver`)."""
from pathlib import Path

import pytest
import torch

from tests.test_tools._driver import run_tool_cases
from tests.utils import REPO_ROOT

#: a Python process per tool (imports cost seconds)
pytestmark = pytest.mark.slow

DEMO_CONFIG = str(REPO_ROOT / 'configs' / 'demo' / 'maskrcnn_rmt_t_demo.py')
NO_CUDA = not torch.cuda.is_available()


@pytest.fixture
def inputs(tmp_path):
    """A working folder with the files users point tools at by mistake."""
    folder = tmp_path / 'inputs'
    folder.mkdir()
    (folder / 'broken.py').write_text('model = dict(type=\n')
    (folder / 'no_model.py').write_text('x = 1\n')
    (folder / 'notes.txt').write_text('not a folder\n')
    (folder / 'empty').mkdir()
    (folder / 'official.py').write_text('# an official source\n')
    return folder


def _listing(root: Path):
    return sorted((str(p.relative_to(root)), p.stat().st_size)
                  for p in root.rglob('*'))


def check_refusals(script, cases, cwd, env=None):
    """Run ``cases`` (``(argv, [words the error line must hold], exit
    code)``) in one process in ``cwd``; check each refusal and that
    ``cwd`` is unchanged."""
    before = _listing(cwd)
    results = run_tool_cases(script, [argv for argv, _, _ in cases],
                             cwd=cwd, env=env)
    for (argv, words, code), (got, out, err) in zip(cases, results):
        where = f'{script} {argv}: exit {got}\nstdout: {out}\nstderr: {err}'
        assert got == code, where
        lines = [line for line in err.splitlines() if 'error:' in line]
        assert len(lines) == 1, where
        assert 'Traceback' not in err, where
        if code == 1:  # the tool's own check: one line, nothing else
            assert err.strip() == lines[0] and lines[0].startswith(
                'error: '), where
            assert '--debug' in lines[0], where
        for word in words:
            assert word in lines[0], where
        assert out == '', where  # refused before any work began
    assert _listing(cwd) == before, f'{script} wrote files'
    return results


def test_get_flops(tmp_path, inputs):
    out_folder = inputs / 'empty'
    cases = [
        ([DEMO_CONFIG, '--shape', '-8', '64'],
         ['--shape -8 64', 'side -8', 'integers of at least 32', 'stride'], 1),
        (['RMT', '--arch', 't', '--shape', '16'],
         ['side 16', 'at least 32'], 1),
        (['RMT', '--arch', 't', '--shape', '64', '64', '3'],
         ['3 values', 'H or H W'], 1),
        (['configs/missing.py'], ['missing.py', 'does not exist'], 1),
        ([str(inputs / 'broken.py')], ['broken.py', 'does not parse'], 1),
        ([str(inputs / 'notes.txt')], ['notes.txt', '.py file'], 1),
        (['RMT', '--arch', 'x'], ["'x'", "['t', 's', 'b', 'l']"], 1),
        (['RMT'], ['--arch none', "['t', 's', 'b', 'l']"], 1),
        (['Swin', '--arch', 't'],
         ["'Swin'", 'RMT, ResT, ResTV2, ContainerLight, RIFormer'], 1),
        ([], ['nothing to count', 'RMT', '--table'], 1),
        (['--table', '--configs', '--out', str(out_folder)],
         ['--out', 'is an existing folder'], 1),
        (['--table', '--configs', str(inputs / 'nowhere' / '*.py')],
         ['matches no file'], 1),
        (['RMT', '--arch', 't', '--out', 'flops.md'], ['--table'], 1),
        (['RMT', '--arch', 't', '--backend', 'flex', '--counter', 'torch'],
         ['FlexAttention', '--counter mmengine'], 1),
        (['RMT', '--arch', 't', '--counter', 'fvcore'],
         ["invalid choice: 'fvcore'", "'mmengine', 'torch'"], 2),
    ]
    check_refusals('tools/analysis_tools/get_flops.py', cases, tmp_path)


def test_get_flops_debug_shows_the_traceback(tmp_path):
    results = run_tool_cases('tools/analysis_tools/get_flops.py',
                             [['RMT', '--arch', 'x', '--debug']],
                             cwd=tmp_path)
    code, _, err = results[0]
    assert code == 1
    assert 'Traceback' in err and 'ToolError' in err and "'x'" in err


def test_benchmark_backbone(tmp_path, inputs):
    base = ['--device', 'cpu', '--models', 'rmt_t']
    cases = [
        (base + ['--batch', '0'], ['--batch 0', '>= 1'], 1),
        (base + ['--threads', '0'], ['--threads 0', 'from 1 to'], 1),
        (base + ['--warmup', '-1'], ['--warmup -1', '>= 0'], 1),
        (base + ['--repeats', '0'], ['--repeats 0', '>= 1'], 1),
        (base + ['--rounds', '0'], ['--rounds 0', '>= 1'], 1),
        (base + ['--configs', 'missing.py'], ['missing.py', 'does not exist'], 1),
        (base + ['--configs', str(inputs / 'broken.py')],
         ['broken.py', 'does not parse'], 1),
        (base + ['--configs', str(inputs / 'no_model.py')],
         ['no_model.py', 'no model.backbone'], 1),
        (base + ['--methods', 'fused'],
         ['fused', 'CUDA only', "'auto', 'sdpa', 'flex', 'reference'"], 1),
        (base + ['--methods', 'official'], ['needs --official-dir'], 1),
        (base + ['--methods', 'official', '--official-dir',
                 str(inputs / 'empty')], ["lacks ['RMT.py']"], 1),
        (base + ['--methods', 'official', '--official-dir',
                 str(inputs / 'nowhere')], ['does not exist'], 1),
        (['--device', 'cpu', '--models'], ['nothing to measure'], 1),
        (base + ['--models', 'swin'], ["invalid choice: 'swin'", 'rmt_t'],
         2),
    ]
    if NO_CUDA:
        cases.append((['--device', 'cuda'], ['no CUDA device', "'cpu'"], 1))
    check_refusals('tools/analysis_tools/benchmark_backbone.py', cases,
                   tmp_path)


def test_profile_backbone(tmp_path, inputs):
    tool = 'tools/analysis_tools/profile_backbone.py'
    cases = [
        (['rmt_t', '--size', '-8', '64'], ['--size', 'at least 32'], 1),
        (['rmt_t', '--size', '64', '64', '64'], ['--size', '3 values'], 1),
        (['rmt_t', '--threads', '0'], ['--threads 0', 'from 1 to'], 1),
        (['rmt_t', '--code', 'official'], ['--official-dir'], 1),
        (['rmt_t', '--official-dir', str(inputs / 'empty')],
         ['--official-dir', "lacks ['RMT.py']"], 1),
        (['swin_t'], ['invalid choice', 'rmt_t'], 2),
    ]
    check_refusals(tool, cases, tmp_path)


def test_benchmark_ops(tmp_path):
    base = ['--device', 'cpu']
    cases = [
        (base + ['--batch', '0'], ['--batch 0', '>= 1'], 1),
        (base + ['--threads', '0'], ['--threads 0', 'from 1 to'], 1),
        (base + ['--warmup', '-2'], ['--warmup -2', '>= 0'], 1),
        (base + ['--repeats', '0'], ['--repeats 0'], 1),
        (base + ['--rounds', '-1'], ['--rounds -1'], 1),
        (base + ['--methods', 'sdpa', 'fused'],
         ['fused', 'CUDA only', "'auto', 'sdpa', 'flex', 'reference'"], 1),
        (base + ['--dtype', 'fp64'], ["invalid choice: 'fp64'", 'bf16'], 2),
    ]
    if NO_CUDA:
        cases.append((['--device', 'cuda'], ['no CUDA device'], 1))
    check_refusals('tools/analysis_tools/benchmark_ops.py', cases, tmp_path)


def test_benchmark_throughput(tmp_path):
    base = ['--device', 'cpu', '--models', 'RMT:t']
    cases = [
        (base + ['--size', '16'], ['--size 16', 'integer of at least 32'], 1),
        (base + ['--size', '-224'], ['--size -224', 'at least 32'], 1),
        (base + ['--batch', '0'], ['--batch 0', '>= 1'], 1),
        (base + ['--threads', '0'], ['--threads 0'], 1),
        (base + ['--warmup', '-1'], ['--warmup -1'], 1),
        (base + ['--repeats', '0'], ['--repeats 0'], 1),
        (['--device', 'cpu', '--models', 'RMT:x'],
         ["'RMT:x'", "'RMT:t'", "'RIFormer:m48'"], 1),
        (base + ['--backend', 'fused'], ['fused', 'CUDA only'], 1),
    ]
    if NO_CUDA:
        cases.append((['--device', 'cuda'], ['no CUDA device'], 1))
    check_refusals('tools/analysis_tools/benchmark_throughput.py', cases,
                   tmp_path)


def test_benchmark_dwconv(tmp_path):
    cases = [
        (['--threads', '0'], ['--threads 0', 'from 1 to'], 1),
        (['--warmup', '-1'], ['--warmup -1', '>= 0'], 1),
        (['--repeats', '0'], ['--repeats 0', '>= 1'], 1),
        (['--repeats', 'many'], ["invalid int value: 'many'"], 2),
    ]
    check_refusals('tools/analysis_tools/benchmark_dwconv.py', cases,
                   tmp_path)


def test_gpu_acceptance(tmp_path, inputs):
    base = ['--device', 'cpu', '--quick', '--no-build', '--out-dir',
            str(tmp_path / 'report')]
    taken = inputs / 'taken'
    (taken / 'acceptance.json').mkdir(parents=True)
    cases = [
        (base + ['--out-dir', str(inputs / 'notes.txt')],
         ['--out-dir', 'is an existing file'], 1),
        (base + ['--out-dir', str(inputs / 'notes.txt' / 'sub')],
         ['notes.txt', 'no folder can be made'], 1),
        (base + ['--out-dir', str(taken)],
         ['acceptance.json', 'is an existing folder'], 1),
        (base + ['--wheels', str(inputs / 'nowhere')],
         ['--wheels', 'does not exist'], 1),
        (base + ['--official-dir', str(inputs / 'empty')],
         ["lacks ['RMT.py']"], 1),
        (base + ['--budget-s', '0'], ['--budget-s 0', '> 0'], 1),
        (base + ['--repeats', '0'], ['--repeats 0'], 1),
        (base + ['--warmup', '-1'], ['--warmup -1'], 1),
        (base + ['--backends', 'cudnn'],
         ["invalid choice: 'cudnn'", "'sdpa', 'flex', 'fused', "
          "'reference'"], 2),
    ]
    if NO_CUDA:
        cases.append((['--device', 'cuda', '--out-dir',
                       str(tmp_path / 'report')], ['no CUDA device'], 1))
    check_refusals('tools/analysis_tools/gpu_acceptance.py', cases,
                   tmp_path)


def _coco(folder: Path, splits: dict) -> Path:
    """A COCO demo folder whose annotation files hold ``splits``' texts."""
    (folder / 'annotations').mkdir(parents=True)
    for split, text in splits.items():
        (folder / 'annotations' / f'instances_{split}.json').write_text(text)
    return folder


def test_make_demo_cls(tmp_path, inputs):
    one_image = ('{"images": [{"id": 1, "file_name": "a.jpg"}], '
                 '"categories": [{"id": 1, "name": "circle"}], '
                 '"annotations": []}')
    broken = _coco(inputs / 'broken', dict(train='{"images": [',
                                           val=one_image))
    # a complete train split, a val split whose image is missing
    missing = _coco(inputs / 'missing', dict(train=one_image, val=one_image))
    (missing / 'train').mkdir()
    (missing / 'train' / 'a.jpg').write_bytes(b'')
    cases = [
        (['--src', str(inputs / 'nowhere')], ['--src', 'does not exist'], 1),
        (['--src', str(inputs / 'empty')],
         ['lacks', 'annotations/instances_train.json'], 1),
        (['--src', str(broken)],
         ['instances_train.json', 'not a COCO instances file'], 1),
        (['--src', str(missing), '--out', 'cls'],
         ['val/a.jpg', 'does not exist'], 1),
        (['--src', str(missing), '--context', '0'], ['--context 0', '> 0'],
         1),
        (['--src', str(missing), '--context', 'nan'], ['--context nan'], 1),
        (['--src', str(missing), '--out', str(inputs / 'notes.txt')],
         ['--out', 'is an existing file'], 1),
        (['--src', str(missing), '--out', str(inputs / 'notes.txt' / 'cls')],
         ['no folder can be made'], 1),
    ]
    check_refusals('tools/dataset_converters/make_demo_cls.py', cases,
                   tmp_path)


def test_make_demo_data(tmp_path, inputs):
    cases = [
        (['--num-train', '0'], ['--num-train 0', '>= 1'], 1),
        (['--num-val', '-1'], ['--num-val -1', '>= 1'], 1),
        (['--size', '16'], ['--size 16', 'integer of at least 32'], 1),
        (['--seed', '-1'], ['--seed -1', '>= 0'], 1),
        (['--out', str(inputs / 'notes.txt')],
         ['--out', 'is an existing file'], 1),
        (['--sets', 'voc'], ["invalid choice: 'voc'", "'coco', 'ade'"], 2),
    ]
    check_refusals('tools/dataset_converters/make_demo_data.py', cases,
                   tmp_path)


def test_run_demo(tmp_path, inputs):
    cases = [
        (['--config', 'configs/demo/missing.py'],
         ['--config', 'missing.py', 'does not exist'], 1),
        (['--config', str(inputs / 'broken.py')],
         ['broken.py', 'does not parse'], 1),
        (['--config', str(inputs / 'no_model.py')],
         ['no_model.py', 'lacks what the demo sets',
          'maskrcnn_rmt_t_demo.py'], 1),
        (['--config', DEMO_CONFIG, '--max-iters', '1'],
         ['--max-iters 1', '>= 2'], 1),
        (['--config', DEMO_CONFIG, '--num-vis', '0'], ['--num-vis 0'], 1),
        (['--config', DEMO_CONFIG, '--score-thr', '1.5'],
         ['--score-thr 1.5', 'from 0 to 1'], 1),
        (['--config', DEMO_CONFIG, '--work-dir', str(inputs / 'notes.txt')],
         ['--work-dir', 'is an existing file'], 1),
        (['--config', DEMO_CONFIG, '--data', str(inputs / 'notes.txt')],
         ['--data', 'is an existing file'], 1),
    ]
    check_refusals('tools/run_demo.py', cases, tmp_path)


def test_make_parity_fixtures(tmp_path, inputs):
    official = str(inputs / 'official.py')
    cases = [
        ([], ['nothing to write', '--rmt', '--mmpretrain'], 1),
        (['--rmt', 'RMT/missing.py'], ['--rmt', 'does not exist'], 1),
        (['--rmt', str(inputs / 'empty')], ['--rmt', 'is a folder'], 1),
        (['--rest', str(inputs / 'notes.txt')], ['--rest', '.py file'], 1),
        (['--restv2-seg', official], ['--restv2-seg goes with --restv2'], 1),
        (['--mmpretrain', str(inputs / 'empty')],
         ['--mmpretrain', 'models/backbones/riformer.py'], 1),
        (['--rmt', official, '--out', str(inputs / 'notes.txt')],
         ['--out', 'is an existing file'], 1),
    ]
    (inputs / 'parity' / 'rmt.pt').mkdir(parents=True)
    cases.append((['--rmt', official, '--out', str(inputs / 'parity')],
                  ['rmt.pt', 'is an existing folder'], 1))
    check_refusals('tools/make_parity_fixtures.py', cases, tmp_path)
