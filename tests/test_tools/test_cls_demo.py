"""Shape classification demo: crops of the bundled shapes, learnt from scratch.

``tools/dataset_converters/make_demo_cls.py`` crops every instance of
``data/demo/coco`` into a folder-per-class set (3 classes: circle, square,
triangle; 767 train / 135 val crops); ``configs/demo/cls_rmt_demo.py``
trains a tiny RMT on it through ``tools/train.py`` (6 epochs, 144
iterations, 64x64 inputs, one CPU thread). Chance is 1/3 (33.3%); seed 0
reaches 92.6% val top-1 (README.md); the test asserts > 70%.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils import load_script

REPO = Path(__file__).resolve().parents[2]
CONVERTER = REPO / 'tools' / 'dataset_converters' / 'make_demo_cls.py'
CONFIG = REPO / 'configs' / 'demo' / 'cls_rmt_demo.py'
CLASSES = ('circle', 'square', 'triangle')


def _load_converter():
    return load_script(CONVERTER.relative_to(REPO))


def _files(root: Path):
    return sorted(p.relative_to(root) for p in root.rglob('*.png'))


def test_crops_are_deterministic(tmp_path):
    conv = _load_converter()
    src = str(REPO / 'data' / 'demo' / 'coco')
    for name in ('a', 'b'):
        assert conv.main(['--src', src, '--out', str(tmp_path / name)]) == 0
    files = _files(tmp_path / 'a')
    assert files == _files(tmp_path / 'b')
    for rel in files[::25]:
        assert (tmp_path / 'a' / rel).read_bytes() == \
            (tmp_path / 'b' / rel).read_bytes(), rel
    for split in ('train', 'val'):
        names = sorted(p.name for p in (tmp_path / 'a' / split).iterdir())
        assert names == list(CLASSES)
        for cls in CLASSES:
            assert list((tmp_path / 'a' / split / cls).glob('*.png'))


@pytest.mark.slow  # a whole (short) training run in a subprocess
def test_cls_demo_learns(tmp_path):
    conv = _load_converter()
    data = tmp_path / 'cls'
    conv.main(['--src', str(REPO / 'data' / 'demo' / 'coco'), '--out',
               str(data)])
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    # tiny tensors: one thread avoids OpenMP spin-waits on shared cores
    env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    cmd = [
        sys.executable, str(REPO / 'tools' / 'train.py'), str(CONFIG),
        '--work-dir', str(tmp_path / 'work'), '--cfg-options',
        f'train_dataloader.dataset.data_root={data}',
        f'val_dataloader.dataset.data_root={data}',
        f'test_dataloader.dataset.data_root={data}'
    ]
    proc = subprocess.run(
        cmd, cwd=str(REPO), env=env, capture_output=True, text=True,
        timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    found = re.findall(r'accuracy/top1: ([0-9.]+)', log)
    assert found, log[-4000:]
    accuracy = float(found[-1])
    assert accuracy > 70.0, f'val top-1 {accuracy:.1f}% (chance 33.3%)'
    assert (tmp_path / 'work' / 'epoch_6.pth').is_file()
