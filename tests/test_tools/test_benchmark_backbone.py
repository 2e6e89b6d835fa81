"""tools/analysis_tools/benchmark_backbone.py: our backbones beside the
peers users pick instead, with time, peak memory and forward MACs per case,
and its argument checks."""
import subprocess
import sys

import pytest

from tests.utils import REPO_ROOT, load_script

SCRIPT = REPO_ROOT / 'tools' / 'analysis_tools' / 'benchmark_backbone.py'
bench = load_script('tools/analysis_tools/benchmark_backbone.py')


@pytest.mark.parametrize('argv, message', [
    (['--device', 'cpu', '--methods', 'fused'], 'fused kernels run on CUDA'),
    (['--device', 'cpu', '--methods', 'official'], 'needs --official-dir'),
    (['--device', 'cpu', '--models', '--configs', 'missing.py'],
     'does not exist'),
    (['--device', 'cpu', '--models'], 'nothing to measure'),
])
def test_bad_arguments_are_refused(argv, message):
    """Refused before any process starts (how a user sees them, one line
    and exit 1: tests/test_tools/test_tool_arguments.py)."""
    from mmvitmix.apis import ToolError
    with pytest.raises(ToolError, match=message):
        bench.parse_args(argv)


def test_default_methods_run_on_the_device():
    args = bench.parse_args(['--device', 'cpu'])
    assert args.methods == ['auto', 'sdpa', 'flex', 'reference']
    assert bench.cases(bench.parse_args(
        ['--device', 'cpu', '--models', 'rmt_t', 'riformer_s12', '--peers',
         'r50', '--methods', 'auto', 'sdpa'])) == [
             ('rmt_t', 'auto'), ('rmt_t', 'sdpa'), ('riformer_s12', 'auto'),
             ('r50', 'mmdet')]


@pytest.mark.slow  # real-size backbones in fresh processes
def test_one_command_prints_time_memory_and_macs_beside_a_peer():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), '--device', 'cpu', '--threads', '1',
         '--models', 'riformer_s12', '--peers', 'r50', '--configs',
         str(REPO_ROOT / 'configs' / 'riformer' /
             'retinanet_riformer_s12_1x.py'), '--inputs', 'seg512',
         '--modes', 'infer', '--warmup', '0', '--repeats', '1', '--rounds',
         '1'], capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split('|')[1:-1] for line in out.stdout.splitlines()
            if line.startswith('| ') and 'seg512' in line]
    assert [r[0].strip() for r in rows] == [
        'riformer_s12', 'r50',
        str(REPO_ROOT / 'configs/riformer/retinanet_riformer_s12_1x.py')]
    by_model = {r[0].strip(): [c.strip() for c in r] for r in rows}
    for cells in by_model.values():
        assert float(cells[4].split()[0]) > 0  # seconds
        assert float(cells[7]) > 0  # peak MiB
    # forward MACs at 512x512: RIFormer-S12 1.8 G at 224 -> about 9.5 G;
    # ResNet-50 4.1 G at 224 -> about 21.4 G; the config's backbone is S12
    assert 8 < float(by_model['riformer_s12'][8]) < 11
    assert 19 < float(by_model['r50'][8]) < 24
    assert by_model['riformer_s12'][8] == by_model[str(
        REPO_ROOT / 'configs/riformer/retinanet_riformer_s12_1x.py')][8]
