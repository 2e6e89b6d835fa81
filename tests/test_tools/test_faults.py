"""Faults during training, end to end through the tools (CPU).

One tiny, deterministic classification run (RIFormer with GroupNorm, no
BatchNorm; no random augmentation; drop path 0; SGD with momentum; a
warm-up so the learning rate changes) on 8 generated images is the
reference. Against it:

* the same run SIGKILLed right after its first checkpoint, then continued
  with ``tools/train.py --resume``: every later iteration's loss and
  learning rate equal the uninterrupted run's;
* its newest checkpoint truncated as by a crash while saving: ``--resume``
  names the damaged file and continues from the last good one;
  ``--resume DAMAGED.pth`` refuses, naming it;
* the same global batch on 2 gloo processes (``tools/dist_train.sh``,
  batch 1 each) instead of 1 (batch 2): the losses (mean over the
  processes) and the final weights agree within :data:`DDP_RTOL`;
* missing, empty and malformed annotation files are named by the tools.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmvitmix.apis import check_annotation_files, choose_resume_checkpoint

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / 'tools'

#: final weights and per-iteration losses, 2 processes x batch 1 vs 1 x 2:
#: the gradients are averaged in another order (DDP's all-reduce vs the
#: batch mean), float32 rounding after 6 SGD steps stays far below this
DDP_RTOL = 1e-5
MAX_ITERS = 6

HOOKS = '''
import json
import os
import signal

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module(force=True)
class RecordLossHook(Hook):
    """Append iteration, loss and learning rate of this rank to a file."""
    priority = 'LOWEST'

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.lr = runner.optim_wrapper.get_lr()['lr'][0]

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        path = os.path.join(runner.work_dir, f'losses_{get_rank()}.jsonl')
        with open(path, 'a') as f:
            f.write(json.dumps(dict(iter=runner.iter + 1, lr=self.lr,
                                    loss=float(outputs['loss']))) + '\\n')


@HOOKS.register_module(force=True)
class SigkillHook(Hook):
    """SIGKILL this process after iteration ``at`` (its checkpoint saved:
    CheckpointHook runs earlier, at priority VERY_LOW)."""
    priority = 'LOWEST'

    def __init__(self, at):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 == self.at:
            assert os.path.isfile(
                os.path.join(runner.work_dir, f'iter_{self.at}.pth'))
            os.kill(os.getpid(), signal.SIGKILL)
'''

CONFIG = f'''
default_scope = 'mmpretrain'
custom_imports = dict(
    imports=['mmvitmix.models', 'fault_hooks'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        num_classes=2, mean=[127.5] * 3, std=[127.5] * 3, to_rgb=True),
    backbone=dict(
        type='mmvitmix.RIFormer',
        arch=dict(layers=[1, 1, 1, 1], embed_dims=[16, 24, 32, 40],
                  mlp_ratios=[2, 2, 2, 2]),
        out_indices=3,
        drop_path_rate=0.),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead', num_classes=2, in_channels=40,
        loss=dict(type='CrossEntropyLoss')))
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CustomDataset',
        data_root='data/cls',
        data_prefix='train',
        pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
train_cfg = dict(by_epoch=False, max_iters={MAX_ITERS})
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.25, by_epoch=False, begin=0, end=4)
]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [dict(type='RecordLossHook')]
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork'),
    dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
log_level = 'INFO'
load_from = None
resume = False
'''


def _env():
    env = dict(os.environ)
    paths = [str(REPO), os.environ['FAULT_ROOT']]
    if env.get('PYTHONPATH'):
        paths.append(env['PYTHONPATH'])
    env['PYTHONPATH'] = os.pathsep.join(paths)
    return env


def _run(cmd, cwd, expect_rc=0, **extra_env):
    env = _env()
    env.update(extra_env)
    proc = subprocess.run([str(c) for c in cmd],
                          cwd=cwd,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)
    if expect_rc is not None:
        assert proc.returncode == expect_rc, (
            f'{cmd} exited {proc.returncode}, expected {expect_rc}\n--- '
            f'stdout\n{proc.stdout[-3000:]}\n--- stderr\n'
            f'{proc.stderr[-5000:]}')
    return proc


def _train(root, work_dir, *options, expect_rc=0):
    cmd = [sys.executable, TOOLS / 'train.py', root / 'cls.py', '--work-dir',
           work_dir]
    if options:
        cmd += list(options)
    return _run(cmd, root, expect_rc)


def _losses(work_dir, rank=0):
    path = Path(work_dir) / f'losses_{rank}.jsonl'
    return [json.loads(line) for line in path.read_text().splitlines()]


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    """Images (2 classes x 4, 64x64), the config and the hooks module."""
    from PIL import Image
    root = tmp_path_factory.mktemp('faults')
    rng = np.random.default_rng(0)
    for label, (name, level) in enumerate((('dark', 60), ('bright', 190))):
        folder = root / 'data' / 'cls' / 'train' / name
        folder.mkdir(parents=True)
        for i in range(4):
            image = np.clip(
                rng.normal(level, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(folder / f'{i}.png')
    (root / 'cls.py').write_text(CONFIG)
    (root / 'cls_kill.py').write_text(
        "_base_ = './cls.py'\n"
        "custom_hooks = [dict(type='RecordLossHook'), "
        "dict(type='SigkillHook', at=2)]\n")
    (root / 'fault_hooks.py').write_text(HOOKS)
    os.environ['FAULT_ROOT'] = str(root)
    return root


@pytest.fixture(scope='module')
def reference(root):
    """The uninterrupted run: 1 process, batch 2, checkpoints at 2, 4, 6."""
    work_dir = root / 'work_ref'
    _train(root, work_dir)
    losses = _losses(work_dir)
    assert [r['iter'] for r in losses] == list(range(1, MAX_ITERS + 1))
    return work_dir, losses


@pytest.mark.slow  # training runs in subprocesses
def test_reference_run_learns_with_changing_lr(reference):
    _, losses = reference
    assert all(np.isfinite(r['loss']) for r in losses)
    lrs = [r['lr'] for r in losses]
    assert lrs[0] < lrs[3], 'the warm-up should raise the learning rate'


@pytest.mark.slow  # training runs in subprocesses
def test_sigkill_then_resume_continues_exactly(root, reference):
    _, expected = reference
    work_dir = root / 'work_killed'
    proc = _run([
        sys.executable, TOOLS / 'train.py', root / 'cls_kill.py',
        '--work-dir', work_dir
    ],
                root,
                expect_rc=None)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode,
                                                proc.stderr[-3000:])
    assert (work_dir / 'iter_2.pth').is_file()
    assert not (work_dir / 'iter_4.pth').exists()
    assert [r['iter'] for r in _losses(work_dir)] == [1, 2]

    proc = _train(root, work_dir, '--resume')
    assert 'resumed' in (proc.stdout + proc.stderr).lower()
    got = _losses(work_dir)
    assert [r['iter'] for r in got] == list(range(1, MAX_ITERS + 1))
    for after, before in zip(got[2:], expected[2:]):
        assert after['lr'] == pytest.approx(before['lr'], rel=1e-12), after
        assert after['loss'] == pytest.approx(before['loss'], rel=1e-6), (
            after, before)


@pytest.mark.slow  # training runs in subprocesses
def test_truncated_checkpoint_is_skipped_and_named(root, reference):
    ref_dir, _ = reference
    work_dir = root / 'work_truncated'
    shutil.copytree(ref_dir, work_dir)
    (work_dir / 'losses_0.jsonl').unlink()
    damaged = work_dir / f'iter_{MAX_ITERS}.pth'
    (work_dir / 'last_checkpoint').write_text(str(damaged))
    data = damaged.read_bytes()
    damaged.write_bytes(data[:len(data) // 2])  # a crash while saving

    # --resume PATH of the damaged file: refused, the file named
    proc = _train(root, work_dir, '--resume', damaged, expect_rc=None)
    assert proc.returncode != 0
    assert f"cannot resume from '{damaged}'" in proc.stderr
    assert 'damaged' in proc.stderr and 'iter_4.pth' in proc.stderr

    # --resume: the damaged one named and skipped, iter_4 taken
    proc = _train(root, work_dir, '--resume', '--cfg-options',
                  f'train_cfg.max_iters={MAX_ITERS + 2}')
    output = proc.stdout + proc.stderr
    assert f'skipping damaged checkpoint {damaged}' in output
    assert f'resuming from {work_dir / "iter_4.pth"}' in output
    assert [r['iter'] for r in _losses(work_dir)] == [5, 6, 7, 8]
    assert (work_dir / 'iter_8.pth').is_file()


@pytest.mark.slow  # training runs in subprocesses
def test_ddp_two_processes_match_one(root, reference):
    if torch.cuda.is_available():
        pytest.skip('checks the CPU (gloo) path')
    ref_dir, expected = reference
    work_dir = root / 'work_ddp'
    env = _env()
    proc = subprocess.run([
        'bash',
        str(TOOLS / 'dist_train.sh'),
        str(root / 'cls.py'), '2', '--work-dir',
        str(work_dir), '--cfg-options', 'train_dataloader.batch_size=1'
    ],
                          cwd=root,
                          env=dict(env, PORT=_free_port()),
                          capture_output=True,
                          text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    rank0, rank1 = _losses(work_dir, 0), _losses(work_dir, 1)
    assert [r['iter'] for r in rank0] == list(range(1, MAX_ITERS + 1))
    for r0, r1, ref in zip(rank0, rank1, expected):
        mean = (r0['loss'] + r1['loss']) / 2
        assert mean == pytest.approx(ref['loss'], rel=DDP_RTOL), (r0, r1, ref)
        assert r0['lr'] == pytest.approx(ref['lr'], rel=1e-12)

    def weights(path):
        return torch.load(path, map_location='cpu',
                          weights_only=False)['state_dict']

    ddp = weights(work_dir / f'iter_{MAX_ITERS}.pth')
    single = weights(ref_dir / f'iter_{MAX_ITERS}.pth')
    assert sorted(ddp) == sorted(single)
    worst = max(((ddp[k].double() - single[k].double()).abs().max() /
                 single[k].double().abs().max().clamp_min(1e-12)).item()
                for k in single if single[k].is_floating_point())
    assert worst < DDP_RTOL, f'max relative weight difference {worst:.2e}'


# ------------------------------------------------------ resume choice (unit)
def _save(path, value=0):
    torch.save({'state_dict': {'w': torch.full((8, ), float(value))}}, path)


def test_choose_resume_checkpoint(tmp_path):
    assert choose_resume_checkpoint(str(tmp_path)) is None  # nothing: scratch
    for i, name in enumerate(['iter_2.pth', 'iter_4.pth', 'iter_6.pth']):
        _save(tmp_path / name, i)
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_6.pth'))
    assert choose_resume_checkpoint(str(tmp_path)) == str(tmp_path /
                                                          'iter_6.pth')
    # newest truncated, second empty: the third is taken
    data = (tmp_path / 'iter_6.pth').read_bytes()
    (tmp_path / 'iter_6.pth').write_bytes(data[:100])
    (tmp_path / 'iter_4.pth').write_bytes(b'')
    assert choose_resume_checkpoint(str(tmp_path)) == str(tmp_path /
                                                          'iter_2.pth')
    with pytest.raises(RuntimeError, match=r'iter_4.pth.*damaged.*empty'):
        choose_resume_checkpoint(str(tmp_path), str(tmp_path / 'iter_4.pth'))
    (tmp_path / 'iter_2.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(RuntimeError, match='no readable checkpoint'):
        choose_resume_checkpoint(str(tmp_path))


# ------------------------------------------------------- annotation files
def _det_cfg(ann_file):
    from mmengine.config import Config
    return Config(
        dict(
            train_dataloader=dict(
                dataset=dict(
                    type='RepeatDataset',
                    times=2,
                    dataset=dict(
                        type='CocoDataset', data_root='', ann_file=ann_file))),
            val_dataloader=None))


@pytest.mark.parametrize('content,match', [
    (None, 'does not exist'),
    ('', r'is empty \(0 bytes\)'),
    ('{"images": [', 'is malformed: it is not valid JSON'),
    ('[1, 2]', 'must hold a JSON object'),
    ('{"images": []}', r"needs the keys \['categories'\]"),
],
                         ids=['missing', 'empty', 'truncated', 'list',
                              'no-categories'])
def test_bad_annotation_file_is_named(tmp_path, content, match):
    path = tmp_path / 'instances_train.json'
    if content is not None:
        path.write_text(content)
    cfg = _det_cfg(str(path))
    with pytest.raises((FileNotFoundError, ValueError)) as info:
        check_annotation_files(cfg)
    message = str(info.value)
    assert str(path) in message
    assert 'train_dataloader.dataset.dataset.ann_file of CocoDataset' in (
        message)
    import re
    assert re.search(match, message), message


def test_good_annotation_file_and_data_root(tmp_path):
    (tmp_path / 'ann.json').write_text(
        '{"images": [], "annotations": [], "categories": []}')
    cfg = _det_cfg('ann.json')
    cfg.train_dataloader.dataset.dataset.data_root = str(tmp_path)
    assert check_annotation_files(cfg) == 1


@pytest.mark.slow  # training runs in subprocesses
def test_train_tool_names_a_malformed_annotation_file(root):
    ann = root / 'bad_ann.txt'
    ann.write_text('')
    proc = _train(
        root,
        root / 'work_bad_ann',
        '--cfg-options',
        f'train_dataloader.dataset.ann_file={ann}',
        expect_rc=None)
    assert proc.returncode != 0
    assert f"annotation file '{ann}'" in proc.stderr
    assert 'is empty' in proc.stderr
