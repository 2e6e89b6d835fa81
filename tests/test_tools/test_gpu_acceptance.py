"""The GPU acceptance script runs end to end on CPU (``--quick``), so that
it cannot rot where no GPU runs it."""
import json

import pytest

from tests.utils import load_script

gpu_acceptance = load_script('tools/analysis_tools/gpu_acceptance.py')

#: the acceptance script in a subprocess
pytestmark = pytest.mark.slow


def test_quick_cpu_run_writes_a_passing_report(tmp_path):
    code = gpu_acceptance.main([
        '--device', 'cpu', '--quick', '--no-build', '--out-dir',
        str(tmp_path)
    ])
    report = json.loads((tmp_path / 'acceptance.json').read_text())
    assert code == 0, report['problems']
    assert report['passed'] and not report['problems']
    checked = {(r['op'], r['backend']) for r in report['correctness']}
    # on the CPU: every backend but the CUDA-only fused kernels
    assert not any(backend == 'fused' for _, backend in checked)
    for backend in ('sdpa', 'reference'):
        assert ('retention', backend) in checked
        assert ('emsa', backend) in checked
    assert {r['dtype'] for r in report['correctness']} == {
        'fp32', 'bf16', 'fp16'}
    assert all(r['ok'] and r['err'] <= gpu_acceptance.LIMITS[r['dtype']]
               for r in report['correctness'])
    timed = {(r['op'], r['method'], r['mode']) for r in report['ops'] +
             report['backbone'] if 'median_ms' in r}
    for method in ('auto', 'sdpa', 'reference'):
        assert ('backbone', method, 'fwd+bwd') in timed
        assert ('retention', method, 'fwd') in timed
    md = (tmp_path / 'acceptance.md').read_text()
    assert 'Result: PASS' in md and '| retention | sdpa |' in md
