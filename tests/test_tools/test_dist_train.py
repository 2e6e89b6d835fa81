"""End-to-end runs of the training and testing tools on CPU.

* ``tools/dist_train.sh`` with 2 processes (gloo, no GPU) on the Mask R-CNN
  demo, with the backbone's norms switched to SyncBN to exercise the CPU
  fallback, then ``tools/dist_test.sh`` on the checkpoint it wrote;
* single-process ``tools/train.py`` on the Semantic FPN demo, then
  ``tools/test.py`` on its checkpoint.

The demo configs read ``data/demo/...`` relative to the working directory;
a tiny copy of the demo data (4 training, 2 validation images per set) is
generated into a temporary folder that the tools run in, so the runs do not
depend on the repository's data and stay short (2 iterations, batch 1,
no validation while training).
"""
import json
import math
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.utils import load_script

#: whole training / test runs in subprocesses (minutes)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / 'tools'
DET_CFG = REPO / 'configs' / 'demo' / 'maskrcnn_rmt_t_demo.py'
SEG_CFG = REPO / 'configs' / 'demo' / 'fpn_rmt_t_demo_ade.py'

#: 2 iterations of batch 1, checkpoint at the end, no validation
SHORT_TRAIN = [
    'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
    'train_dataloader.batch_size=1', 'train_dataloader.num_workers=0',
    'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
    'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1'
]


def _env(**extra):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    env.update(extra)
    return env


def _run(cmd, cwd, **env):
    proc = subprocess.run([str(c) for c in cmd],
                          cwd=cwd,
                          env=_env(**env),
                          capture_output=True,
                          text=True,
                          timeout=900)
    assert proc.returncode == 0, (
        f'{cmd} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}'
        f'\n--- stderr\n{proc.stderr[-6000:]}')
    return proc


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


def _scalars(work_dir):
    files = sorted(Path(work_dir).glob('*/vis_data/scalars.json'))
    assert files, f'no scalars.json under {work_dir}'
    return [json.loads(line) for line in files[-1].read_text().splitlines()]


def _log_text(work_dir):
    logs = sorted(Path(work_dir).glob('*/*.log'))
    assert logs, f'no log under {work_dir}'
    return logs[-1].read_text()


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    """A folder holding a tiny ``data/demo`` (COCO and ADE layouts)."""
    for cfg in (DET_CFG, SEG_CFG):
        assert cfg.is_file(), f'demo config {cfg} is missing'
    module = load_script('tools/dataset_converters/make_demo_data.py')
    root = tmp_path_factory.mktemp('demo_root')
    assert module.main([
        '--out', str(root / 'data' / 'demo'), '--num-train', '4',
        '--num-val', '2'
    ]) == 0
    return root


# ----------------------------------------------------- distributed on CPU
@pytest.fixture(scope='module')
def dist_trained(demo_root):
    if torch.cuda.is_available():
        pytest.skip('checks the CPU (gloo) path of distributed training')
    work_dir = demo_root / 'work_det'
    proc = _run([
        'bash', TOOLS / 'dist_train.sh', DET_CFG, 2, '--work-dir', work_dir,
        '--cfg-options', *SHORT_TRAIN, 'model.backbone.norm_cfg.type=SyncBN'
    ],
                cwd=demo_root,
                PORT=_free_port())
    return work_dir, proc


def test_dist_train_cpu(dist_trained):
    work_dir, proc = dist_trained
    assert (work_dir / 'iter_2.pth').is_file()
    output = proc.stdout + proc.stderr
    assert 'using the gloo backend instead of nccl' in output
    assert 'SyncBN replaced by BN' in output
    assert 'model.backbone.norm_cfg (SyncBN)' in output
    log = _log_text(work_dir)
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size
    scalars = _scalars(work_dir)
    assert [s['iter'] for s in scalars] == [1, 2]
    assert all(math.isfinite(s['loss']) and s['loss'] > 0 for s in scalars)

    ckpt = torch.load(work_dir / 'iter_2.pth', map_location='cpu',
                      weights_only=False)
    assert ckpt['meta']['iter'] == 2
    state = ckpt['state_dict']
    assert 'backbone.stages.1.downsample.norm.running_mean' in state
    assert any(k.startswith('roi_head.mask_head.') for k in state)


def test_dist_test_cpu(dist_trained, demo_root):
    work_dir, _ = dist_trained
    out = demo_root / 'det_results.pkl'
    proc = _run([
        'bash', TOOLS / 'dist_test.sh', DET_CFG, work_dir / 'iter_2.pth', 2,
        '--work-dir', demo_root / 'test_det', '--out', out
    ],
                cwd=demo_root,
                PORT=_free_port())
    assert 'coco/bbox_mAP' in proc.stdout + proc.stderr
    with open(out, 'rb') as f:
        results = pickle.load(f)
    # both processes' predictions are gathered: one per validation image
    assert len(results) == 2
    ann = json.loads(
        (demo_root / 'data/demo/coco/annotations/instances_val.json'
         ).read_text())
    assert sorted(r['img_id'] for r in results) == sorted(
        img['id'] for img in ann['images'])
    assert all('bboxes' in r['pred_instances'] for r in results)


# ------------------------------------------------------ single process
@pytest.fixture(scope='module')
def seg_trained(demo_root):
    work_dir = demo_root / 'work_seg'
    proc = _run([
        sys.executable, TOOLS / 'train.py', SEG_CFG, '--work-dir', work_dir,
        '--cfg-options', *SHORT_TRAIN
    ],
                cwd=demo_root)
    return work_dir, proc


def test_train_single_process(seg_trained):
    work_dir, _ = seg_trained
    assert (work_dir / 'iter_2.pth').is_file()
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith(
        'iter_2.pth')
    log = _log_text(work_dir)
    assert 'Distributed training: False' in log
    scalars = _scalars(work_dir)
    assert [s['iter'] for s in scalars] == [1, 2]
    assert all(math.isfinite(s['decode.loss_ce']) for s in scalars)


def test_test_single_process(seg_trained, demo_root):
    work_dir, _ = seg_trained
    pred_dir = demo_root / 'seg_pred'
    test_dir = demo_root / 'test_seg'
    _run([
        sys.executable, TOOLS / 'test.py', SEG_CFG, work_dir / 'iter_2.pth',
        '--work-dir', test_dir, '--out', pred_dir
    ],
         cwd=demo_root)
    assert sorted(p.name for p in pred_dir.iterdir()) == [
        'shapes_val_00000.png', 'shapes_val_00001.png'
    ]
    metrics = sorted(test_dir.glob('*/*.json'))
    assert metrics, 'test.py wrote no metrics file'
    result = json.loads(metrics[-1].read_text())
    assert 0 <= result['mIoU'] <= 100
    assert 'Load checkpoint from' in _log_text(test_dir)
