"""tools/analysis_tools/profile_backbone.py: the op table and the tensors
saved for backward, per stage, as a developer reads them."""
import pytest

from mmvitmix.apis import ToolError
from tests.utils import load_script

tool = load_script('tools/analysis_tools/profile_backbone.py')


def test_profiles_ops_and_saved_tensors_by_stage(capsys):
    tool.main(['rmt_t', '--size', '64', '96', '--mode', 'fwd+bwd', '--top',
               '4'])
    out = capsys.readouterr().out
    assert '## rmt_t (mmvitmix), 64x96, fwd+bwd' in out
    assert 'Self CPU time total' in out
    line = next(x for x in out.splitlines()
                if x.startswith('saved for backward'))
    # every stage of the backbone keeps something for backward
    for stage in ('stem', 'stage0', 'stage1', 'stage2', 'stage3'):
        assert f'{stage} ' in line, line


def test_inference_has_no_saved_tensor_table(capsys):
    tool.main(['rest_lite', '--size', '64', '--mode', 'infer'])
    out = capsys.readouterr().out
    assert 'rest_lite (mmvitmix), 64x64, infer' in out
    assert 'saved for backward' not in out


@pytest.mark.parametrize('argv, message', [
    (['rmt_t', '--size', '-8', '64'], 'at least 32'),
    (['rmt_t', '--size', '16'], 'at least 32'),
    (['rmt_t', '--threads', '0'], 'from 1 to'),
    (['rmt_t', '--code', 'official'], 'needs --official-dir'),
    (['rmt_t', '--official-dir', '/nonexistent'], 'does not exist'),
])
def test_bad_arguments_are_refused_before_any_work(argv, message):
    with pytest.raises(ToolError, match=message):
        tool.main(argv)
