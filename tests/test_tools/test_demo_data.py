"""The bundled demo data and its generator.

* the generator is deterministic and a small run is a prefix of a full run;
* the committed data is what the generator makes;
* COCO masks, boxes and areas agree (decoded by pycocotools);
* the ADE-style label maps use 0 (ignored rim), 1 (background), 2-4;
* mmdet's CocoDataset and mmseg's BaseSegDataset load one sample each with
  the pipelines of the demo configs.
"""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.utils import load_script

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / 'data' / 'demo'
GENERATOR = REPO / 'tools' / 'dataset_converters' / 'make_demo_data.py'
DET_CONFIG = REPO / 'configs' / 'demo' / 'maskrcnn_rmt_t_demo.py'
SEG_CONFIG = REPO / 'configs' / 'demo' / 'fpn_rmt_t_demo_ade.py'


gen = load_script(GENERATOR.relative_to(REPO))


def _all_files(root: Path):
    return sorted(p.relative_to(root) for p in root.rglob('*') if p.is_file())


@pytest.fixture(scope='module')
def small_run(tmp_path_factory):
    """Two generations of a small subset into separate folders."""
    base = tmp_path_factory.mktemp('demo')
    for name in ('a', 'b'):
        gen.main(['--out', str(base / name), '--num-train', '3', '--num-val',
                  '2'])
    return base


def test_generator_is_deterministic(small_run):
    files_a = _all_files(small_run / 'a')
    files_b = _all_files(small_run / 'b')
    assert files_a == files_b
    # 2 sets x (3 train + 2 val) images, 5 ADE label maps, 2 COCO json
    assert len(files_a) == 10 + 5 + 2
    for rel in files_a:
        assert (small_run / 'a' / rel).read_bytes() == \
            (small_run / 'b' / rel).read_bytes(), rel


def test_committed_data_matches_generator(small_run):
    """The committed files are the generator's output (a small run is a
    prefix of the full run). Annotations and label maps are compared
    exactly; JPEG pixels after decoding (codec builds may differ)."""
    if not (DEMO / 'coco' / 'annotations' / 'instances_train.json').is_file():
        pytest.skip('data/demo not generated')
    for split, num in (('train', 3), ('val', 2)):
        small = json.loads((small_run / 'a' / 'coco' / 'annotations' /
                            f'instances_{split}.json').read_text())
        full = json.loads((DEMO / 'coco' / 'annotations' /
                           f'instances_{split}.json').read_text())
        assert small['categories'] == full['categories']
        assert small['images'] == full['images'][:num]
        ids = {im['id'] for im in small['images']}
        assert small['annotations'] == [
            a for a in full['annotations'] if a['image_id'] in ids
        ]
        for im in small['images']:
            ours = cv2.imread(
                str(small_run / 'a' / 'coco' / split / im['file_name']))
            committed = cv2.imread(str(DEMO / 'coco' / split /
                                       im['file_name']))
            assert committed is not None and ours.shape == committed.shape
            diff = np.abs(ours.astype(int) - committed.astype(int)).mean()
            assert diff < 1.0, im['file_name']
    for folder, num in (('training', 3), ('validation', 2)):
        for path in sorted(
            (small_run / 'a' / 'ade' / 'annotations' / folder).iterdir()):
            committed = DEMO / 'ade' / 'annotations' / folder / path.name
            assert np.array_equal(
                cv2.imread(str(path), cv2.IMREAD_UNCHANGED),
                cv2.imread(str(committed), cv2.IMREAD_UNCHANGED)), path.name


def test_rle_encoder_matches_pycocotools():
    mask_util = pytest.importorskip('pycocotools.mask')
    rng = np.random.default_rng(0)
    masks = [
        np.zeros((7, 5), np.uint8),
        np.ones((7, 5), np.uint8),
        (rng.random((40, 33)) > 0.5).astype(np.uint8),
    ]
    _, shapes = gen.render_image(gen.image_rng(0, 'coco', 'train', 6), 128)
    masks += [m for _, m in shapes]
    for mask in masks:
        ours = gen.encode_mask(mask)
        ref = mask_util.encode(np.asfortranarray(mask))
        assert ours['counts'] == ref['counts'].decode('ascii')
        assert ours['size'] == list(ref['size'])
        assert np.array_equal(mask_util.decode(ours), mask)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_coco_masks_boxes_areas_agree(split):
    mask_util = pytest.importorskip('pycocotools.mask')
    ann_file = DEMO / 'coco' / 'annotations' / f'instances_{split}.json'
    if not ann_file.is_file():
        pytest.skip('data/demo not generated')
    coco = json.loads(ann_file.read_text())
    assert [c['name'] for c in coco['categories']] == list(gen.COCO_CLASSES)
    images = {im['id']: im for im in coco['images']}
    assert len(images) == gen.DEFAULT_COUNTS['coco'][split]
    union = {}
    for ann in coco['annotations']:
        im = images[ann['image_id']]
        mask = mask_util.decode(ann['segmentation'])
        assert mask.shape == (im['height'], im['width'])
        assert ann['iscrowd'] == 0
        assert ann['category_id'] in (1, 2, 3)
        assert ann['area'] == int(mask.sum()) >= gen.MIN_VISIBLE_PIXELS
        assert ann['bbox'] == gen.mask_bbox(mask)
        assert list(mask_util.toBbox(ann['segmentation'])) == ann['bbox']
        # visible masks of one image never overlap
        seen = union.setdefault(ann['image_id'], np.zeros_like(mask))
        assert not (seen & mask).any()
        seen |= mask
    assert set(union) == set(images), 'every image has an instance'


def test_ade_label_maps():
    ann_dir = DEMO / 'ade' / 'annotations' / 'validation'
    if not ann_dir.is_dir():
        pytest.skip('data/demo not generated')
    paths = sorted(ann_dir.glob('*.png'))
    assert len(paths) == gen.DEFAULT_COUNTS['ade']['val']
    assert len(list((DEMO / 'ade' / 'images' / 'validation').glob(
        '*.jpg'))) == len(paths)
    values = set()
    for path in paths:
        label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert label.dtype == np.uint8 and label.shape == (128, 128)
        values |= set(np.unique(label).tolist())
    assert values == {0, 1, 2, 3, 4}


def test_semantic_label_rim_is_ignored():
    mask = np.zeros((9, 9), np.uint8)
    mask[2:7, 2:7] = 1
    label = gen.semantic_label([(1, mask)], 9)
    assert (label[mask == 0] == gen.ADE_BACKGROUND).all()
    assert (label[3:6, 3:6] == 3).all()  # square (index 1) -> value 3
    rim = mask.astype(bool).copy()
    rim[3:6, 3:6] = False
    assert (label[rim] == 0).all()


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_train=0), 'num_train'),
    (dict(num_val=-1), 'num_val'),
    (dict(size=16), 'size'),
    (dict(sets='voc'), 'sets'),
])
def test_generator_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gen.generate(tmp_path, **kwargs)


def _config(path):
    from mmengine.config import Config
    cfg = Config.fromfile(str(path))
    for loader in ('train_dataloader', 'val_dataloader'):
        root = cfg[loader].dataset.data_root
        cfg[loader].dataset.data_root = str(REPO / root)
    return cfg


@pytest.mark.parametrize('loader', ['train_dataloader', 'val_dataloader'])
def test_mmdet_coco_dataset_loads_demo(loader):
    pytest.importorskip('mmdet')
    if not (DEMO / 'coco').is_dir():
        pytest.skip('data/demo not generated')
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = _config(DET_CONFIG)
    dataset = DATASETS.build(cfg[loader].dataset)
    split = 'train' if loader == 'train_dataloader' else 'val'
    assert len(dataset) == gen.DEFAULT_COUNTS['coco'][split]
    assert dataset.metainfo['classes'] == gen.COCO_CLASSES
    sample = dataset[0]
    assert tuple(sample['inputs'].shape) == (3, 128, 128)
    info = dataset.get_data_info(0)
    gt = sample['data_samples'].gt_instances
    # the first sample of either split: flip is random in training, so
    # compare box sizes and the labels
    boxes = np.array([i['bbox'] for i in info['instances']], np.float32)
    assert len(gt) == len(info['instances']) > 0
    assert np.allclose(
        np.sort(gt.bboxes.numpy()[:, 2:] - gt.bboxes.numpy()[:, :2], 0),
        np.sort(boxes[:, 2:] - boxes[:, :2], 0))
    assert sorted(gt.labels.tolist()) == sorted(
        i['bbox_label'] for i in info['instances'])
    masks = gt.masks.to_ndarray()
    assert masks.shape == (len(gt), 128, 128)
    coco = json.loads(Path(cfg[loader].dataset.data_root, cfg[loader].dataset
                           .ann_file).read_text())
    areas = [
        a['area'] for a in coco['annotations']
        if a['image_id'] == info['img_id']
    ]
    assert sorted(masks.sum((1, 2)).tolist()) == sorted(areas)


@pytest.mark.parametrize('loader', ['train_dataloader', 'val_dataloader'])
def test_mmseg_dataset_loads_demo(loader):
    pytest.importorskip('mmseg')
    if not (DEMO / 'ade').is_dir():
        pytest.skip('data/demo not generated')
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    cfg = _config(SEG_CONFIG)
    dataset = DATASETS.build(cfg[loader].dataset)
    split = 'train' if loader == 'train_dataloader' else 'val'
    assert len(dataset) == gen.DEFAULT_COUNTS['ade'][split]
    assert dataset.metainfo['classes'] == gen.ADE_CLASSES
    sample = dataset[0]
    seg = sample['data_samples'].gt_sem_seg.data.numpy()
    inputs = tuple(sample['inputs'].shape)
    # training rescales by 0.75-1.5 and crops 128x128
    assert inputs[0] == 3 and 96 <= min(inputs[1:]) <= max(inputs[1:]) <= 128
    assert seg.shape == (1, ) + inputs[1:]
    # reduce_zero_label: rim 0 -> 255, background 1 -> 0, shapes -> 1..3
    assert set(np.unique(seg).tolist()) <= {0, 1, 2, 3, 255}
    assert 0 in seg and 255 in seg
    if split == 'val':  # no augmentation: compare with the file
        raw = cv2.imread(dataset.get_data_info(0)['seg_map_path'],
                         cv2.IMREAD_UNCHANGED)
        expected = raw.astype(np.int64) - 1
        expected[raw == 0] = 255
        assert np.array_equal(seg[0], expected)
