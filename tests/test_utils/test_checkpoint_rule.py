"""The one rule for reading a checkpoint and loading it into a model
(mmvitmix.utils.checkpoint) and the tools' argument checks
(mmvitmix.apis.checks): fast, no tool started."""
import argparse
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from mmvitmix.apis.checks import (build_model_shapes, check_checkpoint_fits,
                                  check_output_dir, check_output_file,
                                  check_shape)
from mmvitmix.utils import (DEFAULT_MIN_COVERAGE, CheckpointError,
                            ToolError, check_coverage, check_min_coverage,
                            load_checked, measure_coverage, model_state_dict,
                            read_checkpoint)


class Net(nn.Module):
    """backbone: 100 + 10 elements; head: 20 + 2 (132 in all)."""

    def __init__(self, head_out=2):
        super().__init__()
        self.backbone = nn.Linear(10, 10)
        self.head = nn.Linear(10, head_out)
        self.register_buffer('stat', torch.zeros(3))


# ------------------------------------------------------------ reading
@pytest.mark.parametrize('seed', range(64))
def test_random_bytes_are_refused_by_name(tmp_path, seed):
    """Whatever the unpickler raises on 4096 random bytes (UnpicklingError,
    EOFError, IndexError, KeyError, UnicodeDecodeError, ...), the message
    names the file as unreadable."""
    path = tmp_path / f'random_{seed}.pth'
    path.write_bytes(np.random.default_rng(seed).bytes(4096))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(str(path))
    message = str(info.value)
    assert message.startswith(f'cannot read checkpoint {str(path)!r}: not a '
                              'PyTorch checkpoint file, or a damaged one (')
    assert '\n' not in message


def test_missing_folder_empty_truncated(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=r"'.*no\.pth' does not exist"):
        read_checkpoint(str(tmp_path / 'no.pth'))  # a CheckpointError too
    with pytest.raises(CheckpointError, match='is a folder'):
        read_checkpoint(str(tmp_path))
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(CheckpointError,
                       match=r'cannot read checkpoint .*: it is empty'):
        read_checkpoint(str(empty))
    whole = tmp_path / 'whole.pth'
    torch.save({'state_dict': Net().state_dict()}, whole)
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(CheckpointError,
                       match=r"cannot read checkpoint '.*cut\.pth'"):
        read_checkpoint(str(cut))


def test_pickled_objects_are_named(tmp_path):
    path = tmp_path / 'args.pth'
    torch.save({'args': argparse.Namespace(lr=1), 'model': {}}, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(str(path))
    message = str(info.value)
    assert 'it pickles Python objects besides tensors' in message
    assert message.endswith('(UnpicklingError: Unsupported global: GLOBAL '
                            'argparse.Namespace)')


def test_mmengine_checkpoint_loads(tmp_path):
    """What mmengine's Runner pickles (HistoryBuffer, numpy) still loads."""
    from mmengine.logging import HistoryBuffer
    buffer = HistoryBuffer()
    buffer.update(np.float64(1.5))
    path = tmp_path / 'iter_1.pth'
    torch.save({'state_dict': Net().state_dict(),
                'message_hub': {'log_scalars': {'loss': buffer}},
                'meta': {'seed': np.int64(3)}}, path)
    ckpt = read_checkpoint(str(path))
    assert set(model_state_dict(ckpt)) == set(Net().state_dict())


def test_model_state_dict():
    sd = Net().state_dict()
    wrapped = {f'module.{k}': v for k, v in sd.items()}
    assert set(model_state_dict({'state_dict': wrapped})) == set(sd)
    assert set(model_state_dict(sd)) == set(sd)
    with pytest.raises(CheckpointError, match='holds a Tensor, not a dict'):
        model_state_dict(torch.zeros(1))


# ------------------------------------------------------------ coverage
def test_measure_coverage_by_element_and_shape():
    model = Net()
    full = model.state_dict()
    cov = measure_coverage(model, full)
    assert (cov.share, cov.total, cov.loaded, cov.num_params) == (1., 132,
                                                                   132, 4)
    # the head of another size: its 22 elements not provided
    other = Net(head_out=5).state_dict()
    other['extra.weight'] = torch.zeros(1)
    cov = measure_coverage(model, other)
    assert cov.loaded == 110 and cov.share == pytest.approx(110 / 132)
    assert cov.missing == ['head.weight', 'head.bias']
    assert cov.mismatched == [('head.weight', (5, 10), (2, 10)),
                              ('head.bias', (5, ), (2, ))]
    assert cov.unexpected == ['extra.weight']
    # ignored keys are not counted
    cov = measure_coverage(model, other, ignore=['head.weight', 'head.bias'])
    assert cov.share == 1.0


def test_coverage_refusals():
    model = Net()
    with pytest.raises(CheckpointError) as info:
        check_coverage(model, {'conv1.weight': torch.zeros(3)}, 'r18.pth',
                       min_coverage=0.)
    message = str(info.value)
    assert message.startswith('Net: no parameter of the model could be '
                              'loaded from r18.pth')
    assert "'backbone.weight'" in message and "'conv1.weight'" in message

    other = Net(head_out=5).state_dict()
    del other['backbone.bias']
    with pytest.raises(CheckpointError) as info:
        check_coverage(model, other, 'x.pth')
    message = str(info.value)
    assert 'x.pth provides 75.8% of the model\'s parameters' in message
    assert '3 of 4 tensors missing' in message
    assert ("head.weight: (5, 10) in the file, (2, 10) in the model"
            in message)
    assert f'below min_coverage={DEFAULT_MIN_COVERAGE:g}' in message
    assert message.endswith('pass --min-coverage 0.75')
    # accepted when lowered, up to the share itself
    assert check_coverage(model, other, 'x.pth', 0.75).loaded == 100


def test_small_share_gets_a_usable_threshold():
    # a file with under 1 % of the model: the suggested --min-coverage is
    # not 0.00 (which reads as "load anything") but the share, rounded down
    # 2.0 %: two decimals, as for any share from 0.01 up
    model = nn.Sequential(nn.Linear(100, 100), nn.Linear(100, 2))
    state = {'1.weight': torch.zeros(2, 100), '1.bias': torch.zeros(2)}
    with pytest.raises(CheckpointError) as info:
        check_coverage(model, state, 'tiny.pth')
    assert str(info.value).endswith('pass --min-coverage 0.01')
    # 2 of 1,003,002 parameters: two significant decimals
    big = nn.Sequential(nn.Linear(1000, 1000), nn.Linear(1000, 2))
    state = {'1.bias': torch.zeros(2)}
    with pytest.raises(CheckpointError) as info:
        check_coverage(big, state, 'bias.pth')
    assert str(info.value).endswith('pass --min-coverage 0.0000019')
    assert check_coverage(big, state, 'bias.pth', 0.0000019).loaded == 2


def test_describe_hook_is_used(monkeypatch):
    from mmvitmix.utils import checkpoint
    monkeypatch.setattr(checkpoint, '_describe',
                        lambda state: 'an XYZ checkpoint, arch=dict(a=1)')
    with pytest.raises(CheckpointError,
                       match='the file is an XYZ checkpoint, arch=dict'):
        check_coverage(Net(), Net(head_out=5).state_dict(), 'x.pth')


def test_min_coverage_range():
    assert check_min_coverage(0) == 0. and check_min_coverage(1) == 1.
    for bad in (-0.1, 1.5, float('nan'), True, '0.5'):
        with pytest.raises(ToolError, match=r'must be a number in \[0, 1\]'):
            check_min_coverage(bad, '--min-coverage')


def test_load_checked_and_fits(tmp_path):
    source = Net()
    path = tmp_path / 'net.pth'
    torch.save({'state_dict': source.state_dict(), 'meta': {'a': 1}}, path)
    model = Net()
    ckpt = load_checked(model, str(path))
    assert ckpt['meta'] == {'a': 1}
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    # a meta-device model checks names and shapes only
    with torch.device('meta'):
        meta = Net(head_out=5)
    with pytest.raises(CheckpointError, match='size mismatches'):
        check_checkpoint_fits(meta, str(path))
    check_checkpoint_fits(meta, str(path), min_coverage=0.66)


def test_build_model_shapes_on_meta():
    from mmvitmix.apis import load_config
    from tests.utils import REPO_ROOT
    cfg = load_config(str(REPO_ROOT / 'configs/demo/maskrcnn_rmt_t_demo.py'))
    model = build_model_shapes(cfg.model, cfg.default_scope)
    assert next(model.parameters()).device.type == 'meta'
    assert any(k.startswith('backbone.stages.') for k in model.state_dict())


# ------------------------------------------------------- tool arguments
def test_check_shape():
    assert check_shape([64, 96]) == (64, 96)
    assert check_shape(None) is None
    with pytest.raises(ToolError, match=r'--shape -8 64: side -8 is too '
                       r'small; give H W as integers of at least 32'):
        check_shape([-8, 64])
    with pytest.raises(ToolError, match=r'got 1 values \[64\]'):
        check_shape([64])
    assert check_shape([64], lengths=(1, 2)) == (64, )


def test_output_paths(tmp_path):
    with pytest.raises(ToolError, match='is an existing folder'):
        check_output_file(str(tmp_path), 'OUT', ('.onnx', ))
    with pytest.raises(ToolError, match='must end in .onnx'):
        check_output_file(str(tmp_path / 'a.txt'), 'OUT', ('.onnx', ))
    src = tmp_path / 'in.pth'
    src.write_bytes(b'x')
    with pytest.raises(ToolError, match='is the input file'):
        check_output_file(str(tmp_path / '.' / 'in.pth'), 'OUT',
                          inputs=[str(src)])
    with pytest.raises(ToolError, match='is a file, so no folder can be made'):
        check_output_file(str(src / 'sub' / 'o.pth'), 'OUT')
    deep = tmp_path / 'new' / 'deeper' / 'o.pth'
    assert check_output_file(str(deep), 'OUT') == str(deep)
    assert not (tmp_path / 'new').exists()  # nothing created
    with pytest.raises(ToolError, match='is an existing file'):
        check_output_dir(str(src), '--work-dir')
    check_output_dir(str(tmp_path / 'w'), '--work-dir')
    assert not (tmp_path / 'w').exists()
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / 'locked'
        locked.mkdir(mode=0o500)
        with pytest.raises(ToolError, match='not writable'):
            check_output_file(str(locked / 'o.pth'), 'OUT')
