"""The argument checks the tools share (:mod:`mmvitmix.apis.cli`): each
returns the checked value or raises ``ToolError`` naming the option, the
problem and the accepted values, and none writes anything."""
import os

import pytest

from mmvitmix.apis import cli
from mmvitmix.apis.cli import ToolError


@pytest.mark.parametrize('value, minimum, maximum, words', [
    (0, 1, None, ['--n 0', '>= 1']),
    (-1, 0, None, ['--n -1', '>= 0']),
    (9, 1, 8, ['--n 9', 'from 1 to 8']),
    (True, 0, None, ['--n True']),
    ('3', 1, None, ["--n '3'"]),
])
def test_count_refuses(value, minimum, maximum, words):
    with pytest.raises(ToolError) as exc:
        cli.count('--n', value, minimum, maximum)
    for word in words:
        assert word in str(exc.value)


def test_count_and_threads_accept():
    assert cli.count('--n', 0, 0) == 0
    assert cli.count('--n', 8, 1, 8) == 8
    assert cli.threads('--threads', 1) == 1
    with pytest.raises(ToolError, match='logical CPUs'):
        cli.threads('--threads', (os.cpu_count() or 1) + 1)


def test_positive_shape():
    assert cli.positive_shape('--shape', [64]) == (64, )
    assert cli.positive_shape('--shape', [32, 2048]) == (32, 2048)
    assert cli.positive_shape('--size', 224) == (224, )
    with pytest.raises(ToolError, match=r'side -8 .* H or H W as integers '
                       r'of at least 32 \(the backbones\' total stride '
                       r'is 32\)'):
        cli.positive_shape('--shape', [-8, 64])
    with pytest.raises(ToolError, match=r'3 values \[64, 64, 3\]'):
        cli.positive_shape('--shape', [64, 64, 3])
    with pytest.raises(ToolError,
                       match=r'--size 31: .*an integer of at least 32'):
        cli.positive_shape('--size', 31)
    with pytest.raises(ToolError, match=r'of at least 64$'):
        cli.positive_shape('--size', 32, minimum=64)


def test_input_paths(tmp_path):
    (tmp_path / 'a.py').write_text('x = 1\n')
    (tmp_path / 'b.txt').write_text('')
    assert cli.existing_file('--f', tmp_path / 'a.py', ('.py', )).is_file()
    for path, words in [('missing.py', 'does not exist'),
                        ('', 'is a folder'),
                        ('b.txt', "expected a .py file")]:
        with pytest.raises(ToolError, match=words):
            cli.existing_file('--f', tmp_path / path, ('.py', ))
    assert cli.existing_dir('--d', tmp_path, ['a.py']) == tmp_path
    with pytest.raises(ToolError, match=r"lacks \['c.py'\]"):
        cli.existing_dir('--d', tmp_path, ['a.py', 'c.py'])
    with pytest.raises(ToolError, match='is a file'):
        cli.existing_dir('--d', tmp_path / 'b.txt')
    with pytest.raises(ToolError, match='does not exist'):
        cli.existing_dir('--d', tmp_path / 'nowhere')


def test_config_file(tmp_path):
    (tmp_path / 'ok.py').write_text('model = dict(type="X")\n')
    (tmp_path / 'bad.py').write_text('model = dict(type=\n')
    assert cli.config_file('--config', tmp_path / 'ok.py').model.type == 'X'
    with pytest.raises(ToolError, match=r"bad.py' does not parse as a "
                       'config'):
        cli.config_file('--config', tmp_path / 'bad.py')


def test_output_paths_check_and_make_nothing(tmp_path):
    (tmp_path / 'file').write_text('')
    (tmp_path / 'folder').mkdir()
    before = sorted(tmp_path.rglob('*'))
    assert cli.output_file('--out', tmp_path / 'new' / 'deep' / 'x.md')
    assert cli.output_dir('--out', tmp_path / 'new' / 'deep')
    assert cli.output_dir('--out', tmp_path / 'folder')
    with pytest.raises(ToolError,
                       match='is an existing folder; give a file name'):
        cli.output_file('--out', tmp_path / 'folder')
    with pytest.raises(ToolError, match='is an existing file; give a folder'):
        cli.output_dir('--out', tmp_path / 'file')
    with pytest.raises(ToolError, match='no folder can be made below it'):
        cli.output_file('--out', tmp_path / 'file' / 'sub' / 'x.md')
    with pytest.raises(ToolError, match='no folder can be made below it'):
        cli.output_dir('--out', tmp_path / 'file' / 'sub')
    assert sorted(tmp_path.rglob('*')) == before


def test_write_file_is_whole_or_nothing(tmp_path):
    target = tmp_path / 'new' / 'table.md'
    cli.write_file(target, 'one\n')
    assert target.read_text() == 'one\n'
    cli.write_file(target, b'two\n')
    assert target.read_bytes() == b'two\n'
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask

    with pytest.raises(TypeError):
        cli.write_file(target, 42)  # neither str nor bytes
    # the old content stays, no temporary file is left behind
    assert target.read_bytes() == b'two\n'
    assert sorted(p.name for p in target.parent.iterdir()) == ['table.md']


def test_device():
    import torch
    assert cli.device('--device', 'cpu') == 'cpu'
    if not torch.cuda.is_available():
        with pytest.raises(ToolError, match="no CUDA device here; use 'cpu'"):
            cli.device('--device', 'cuda')
