"""RIFormer's distillation demo through the tools, end to end (one epoch).

``tools/train.py configs/demo/cls_poolformer_teacher_demo.py`` trains the
teacher, ``tools/train.py configs/demo/cls_riformer_distill_demo.py`` distils
the student from its checkpoint (the log names ``loss_kd``, ``loss_mi_in``,
``loss_mi_out``, ``loss_mi_rel``), and ``tools/deploy/reparameterize.py`` folds the student's
checkpoint with the plain student config. Two iterations each on 64 of the
bundled shape crops; the accuracy the full demo reaches is in
docs/riformer.md, not asserted here.
"""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('mmpretrain')

REPO = Path(__file__).resolve().parents[2]
CONVERTER = REPO / 'tools' / 'dataset_converters' / 'make_demo_cls.py'
DEMO = REPO / 'configs' / 'demo'


def _train(config, work_dir, data, *options):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    cmd = [
        sys.executable, str(REPO / 'tools' / 'train.py'), str(config),
        '--work-dir', str(work_dir), '--cfg-options',
        f'train_dataloader.dataset.data_root={data}',
        f'val_dataloader.dataset.data_root={data}',
        f'test_dataloader.dataset.data_root={data}',
        # 64 training / 32 validation crops: 2 iterations, a smoke run
        'train_dataloader.dataset.indices=64',
        'val_dataloader.dataset.indices=32',
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
        'default_hooks.checkpoint.interval=1',
        'default_hooks.logger.interval=1',
        *options
    ]
    proc = subprocess.run(
        cmd, cwd=str(REPO), env=env, capture_output=True, text=True,
        timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


@pytest.mark.slow  # two short training runs in subprocesses
def test_distill_demo_trains_logs_losses_and_reparameterizes(tmp_path):
    spec = importlib.util.spec_from_file_location('make_demo_cls', CONVERTER)
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    data = tmp_path / 'cls'
    conv.main(['--src', str(REPO / 'data' / 'demo' / 'coco'), '--out',
               str(data)])

    _train(DEMO / 'cls_poolformer_teacher_demo.py', tmp_path / 'teacher',
           data)
    teacher_ckpt = tmp_path / 'teacher' / 'epoch_1.pth'
    assert teacher_ckpt.is_file()
    log = _train(DEMO / 'cls_riformer_distill_demo.py', tmp_path / 'student',
                 data, f'model.teacher_ckpt={teacher_ckpt}')
    for name in ('loss_kd', 'loss_mi_in', 'loss_mi_out', 'loss_mi_rel'):
        values = re.findall(rf'{name}: ([0-9.]+)', log)
        assert values, f'{name} not in the training log'
    assert 'copied' in log and 'from the teacher' in log
    assert re.findall(r'accuracy/top1: ([0-9.]+)', log)

    student_ckpt = tmp_path / 'student' / 'epoch_1.pth'
    out = tmp_path / 'deploy.pth'
    tool = REPO / 'tools' / 'deploy' / 'reparameterize.py'
    proc = subprocess.run(
        [sys.executable, str(tool), str(DEMO / 'cls_riformer_demo.py'),
         str(student_ckpt), str(out), '--shape', '64', '64'],
        cwd=str(REPO), capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert out.is_file()
    assert 'switched' in proc.stdout
