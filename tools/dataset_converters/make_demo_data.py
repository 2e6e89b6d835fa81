"""Generate the bundled demo data: rendered shapes with exact masks.

Two small data sets are written under ``--out`` (default ``data/demo``)::

    coco/annotations/instances_train.json   COCO instances (RLE masks)
    coco/annotations/instances_val.json
    coco/train/*.jpg  coco/val/*.jpg
    ade/images/training/*.jpg  ade/images/validation/*.jpg
    ade/annotations/training/*.png  ade/annotations/validation/*.png

Each image shows 1-4 filled circles, squares and triangles of random colour,
size and rotation, painted in turn (later shapes may hide part of earlier
ones) on a smooth, textured, noisy background. Shapes are rasterised without
anti-aliasing, so every instance mask is exactly the set of pixels painted
in that shape's colour and still visible.

COCO set: categories ``circle`` (1), ``square`` (2), ``triangle`` (3);
``segmentation`` is a compressed RLE of the visible mask, ``bbox`` is
``[x, y, w, h]`` of that mask (inclusive pixel extent), ``area`` its pixel
count, ``iscrowd`` 0. Read it with mmdet's ``CocoDataset`` and
``metainfo=dict(classes=('circle', 'square', 'triangle'))``.

ADE20K-style semantic set: 8-bit PNG label maps where, as in ADE20K, value 0
is "unlabelled" and is ignored when the dataset uses
``reduce_zero_label=True`` (it becomes 255); here 0 marks the one-pixel
inner rim of every shape. 1 is background, 2/3/4 circle/square/triangle, so
after the reduction the classes are ``('background', 'circle', 'square',
'triangle')``. Read it with mmseg's ``BaseSegDataset`` and that metainfo.

Every image has its own random generator seeded from (seed, set, split,
index): the output is byte-identical across runs, and a run with smaller
``--num-train/--num-val`` writes exactly the first images of a full run.
Only numpy and OpenCV are used.

Usage::

    python tools/dataset_converters/make_demo_data.py --out data/demo
"""
import argparse
import json
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
from mmvitmix.apis import cli
from mmvitmix.apis.cli import ToolError, run

COCO_CLASSES = ('circle', 'square', 'triangle')
ADE_CLASSES = ('background', ) + COCO_CLASSES
#: label value of background in the ADE-style maps (0 is "unlabelled")
ADE_BACKGROUND = 1
SETS = ('coco', 'ade', 'all')
#: defaults: COCO 300 train / 50 val, ADE 200 train / 50 val images
DEFAULT_COUNTS = dict(
    coco=dict(train=300, val=50), ade=dict(train=200, val=50))
SPLIT_IDS = dict(train=0, val=1)
SET_IDS = dict(coco=0, ade=1)
JPEG_QUALITY = 90

# shape sizes (circumscribed diameter, pixels) relative to a 128 px image
MIN_SIZE, MAX_SIZE = 0.16, 0.45
MIN_VISIBLE_FRACTION = 0.5
MIN_VISIBLE_PIXELS = 40


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth low-saturation colour field + stripes, float32 (H, W, 3)."""
    base = rng.uniform(60, 200)
    grid = base + rng.uniform(-45, 45, size=(4, 4, 1)) + rng.uniform(
        -20, 20, size=(4, 4, 3))
    field = cv2.resize(
        grid.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6, 20)
    phase = (xx * np.cos(angle) + yy * np.sin(angle)) * (2 * np.pi / period)
    field += rng.uniform(4, 14) * np.sin(phase)[..., None]
    return field


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated colour (BGR float) so shapes stand out from the ground."""
    hsv = np.array([[[
        rng.integers(0, 180),
        rng.integers(140, 256),
        rng.integers(110, 256)
    ]]],
                   dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _shape_mask(label: int, cx: float, cy: float, diameter: float,
                angle: float, size: int) -> np.ndarray:
    """Binary uint8 mask of one shape (no anti-aliasing)."""
    mask = np.zeros((size, size), np.uint8)
    radius = diameter / 2
    if label == 0:  # circle
        cv2.circle(mask, (int(round(cx)), int(round(cy))),
                   int(round(radius)), 1, -1, lineType=cv2.LINE_8)
        return mask
    corners = 4 if label == 1 else 3
    theta = angle + np.arange(corners) * (2 * np.pi / corners)
    pts = np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)],
                   axis=1)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1,
                 lineType=cv2.LINE_8)
    return mask


def render_image(rng: np.random.Generator,
                 size: int) -> Tuple[np.ndarray, List[Tuple[int, np.ndarray]]]:
    """Render one image.

    Returns:
        tuple: the BGR uint8 image and a list of ``(class_index,
        visible_mask)`` in painting order, masks uint8 (H, W) of 0/1.
    """
    image = _background(rng, size)
    num = int(rng.integers(1, 5))
    labels: List[int] = []
    full: List[np.ndarray] = []
    visible: List[np.ndarray] = []
    for _ in range(num):
        for _attempt in range(20):
            label = int(rng.integers(0, len(COCO_CLASSES)))
            diameter = rng.uniform(MIN_SIZE, MAX_SIZE) * size
            margin = diameter * 0.35
            cx = rng.uniform(margin, size - margin)
            cy = rng.uniform(margin, size - margin)
            angle = rng.uniform(0, 2 * np.pi)
            mask = _shape_mask(label, cx, cy, diameter, angle, size)
            if mask.sum() < MIN_VISIBLE_PIXELS:
                continue
            # the new shape hides part of the earlier ones: keep it only if
            # every earlier shape stays visible enough
            after = [v & (1 - mask) for v in visible]
            if all(a.sum() >= max(MIN_VISIBLE_PIXELS,
                                  MIN_VISIBLE_FRACTION * f.sum())
                   for a, f in zip(after, full)):
                visible = after + [mask]
                full.append(mask)
                labels.append(label)
                colour = _colour(rng)
                shade = rng.uniform(-25, 25, size=(1, 1, 1))
                image = np.where(mask[..., None].astype(bool),
                                 colour[None, None, :] + shade, image)
                break
    image = image + rng.normal(0, 5, size=image.shape)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return image, list(zip(labels, visible))


def image_rng(seed: int, data_set: str, split: str,
              index: int) -> np.random.Generator:
    """The generator of one image (independent of how many are made)."""
    return np.random.default_rng(
        [seed, SET_IDS[data_set], SPLIT_IDS[split], index])


# --------------------------------------------------------------------------
# COCO RLE (same format as pycocotools' compressed RLE)
# --------------------------------------------------------------------------


def rle_counts(mask: np.ndarray) -> List[int]:
    """Run lengths of a binary mask in column-major order, zeros first."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order='F')
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return counts


def rle_to_string(counts: List[int]) -> str:
    """pycocotools' ``rleToString``: delta + 5-bit variable length code."""
    chars = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1f
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return ''.join(chars)


def encode_mask(mask: np.ndarray) -> Dict:
    """Compressed COCO RLE of an (H, W) binary mask."""
    height, width = mask.shape
    return dict(size=[height, width], counts=rle_to_string(rle_counts(mask)))


def mask_bbox(mask: np.ndarray) -> List[int]:
    """COCO ``[x, y, w, h]`` of the pixels set in ``mask``."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


# --------------------------------------------------------------------------
# writers
# --------------------------------------------------------------------------


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _encode_jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode('.jpg', image,
                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError('OpenCV could not encode a JPEG image')
    return buf.tobytes()


def _encode_png(label: np.ndarray) -> bytes:
    ok, buf = cv2.imencode('.png', label, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError('OpenCV could not encode a PNG image')
    return buf.tobytes()


def _remove_stale(folder: Path, prefix: str, keep: set) -> None:
    """Delete generated files of an earlier, larger run."""
    if folder.is_dir():
        for path in folder.glob(prefix + '*'):
            if path.name not in keep:
                path.unlink()


def make_coco(out: Path, split: str, num: int, size: int, seed: int) -> Dict:
    """Write ``out/coco/{split}/`` and its annotation file."""
    root = out / 'coco'
    images, annotations = [], []
    names = set()
    for index in range(num):
        rng = image_rng(seed, 'coco', split, index)
        image, shapes = render_image(rng, size)
        name = f'shapes_{split}_{index:05d}.jpg'
        names.add(name)
        _write_bytes(root / split / name, _encode_jpeg(image))
        image_id = index + 1
        images.append(
            dict(id=image_id, file_name=name, width=size, height=size))
        for label, mask in shapes:
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=label + 1,
                    segmentation=encode_mask(mask),
                    area=int(mask.sum()),
                    bbox=mask_bbox(mask),
                    iscrowd=0))
    _remove_stale(root / split, f'shapes_{split}_', names)
    categories = [
        dict(id=i + 1, name=name, supercategory='shape')
        for i, name in enumerate(COCO_CLASSES)
    ]
    coco = dict(
        info=dict(
            description='mmvitmix demo shapes (generated by '
            'tools/dataset_converters/make_demo_data.py)',
            version='1.0'),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=categories)
    text = json.dumps(coco, separators=(',', ':'))
    _write_bytes(root / 'annotations' / f'instances_{split}.json',
                 text.encode('utf-8'))
    return dict(images=len(images), instances=len(annotations))


def semantic_label(shapes: List[Tuple[int, np.ndarray]],
                   size: int) -> np.ndarray:
    """ADE-style label map: 0 rim (ignored), 1 background, 2+ classes."""
    label = np.full((size, size), ADE_BACKGROUND, np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    rim = np.zeros((size, size), bool)
    for cls, mask in shapes:
        label[mask.astype(bool)] = cls + 2
        inner = cv2.erode(mask, kernel, borderType=cv2.BORDER_REPLICATE)
        rim |= mask.astype(bool) & ~inner.astype(bool)
    label[rim] = 0
    return label


def make_ade(out: Path, split: str, num: int, size: int, seed: int) -> Dict:
    """Write ``out/ade/{images,annotations}/{training,validation}/``."""
    folder = dict(train='training', val='validation')[split]
    img_dir = out / 'ade' / 'images' / folder
    ann_dir = out / 'ade' / 'annotations' / folder
    img_names, ann_names = set(), set()
    for index in range(num):
        rng = image_rng(seed, 'ade', split, index)
        image, shapes = render_image(rng, size)
        stem = f'shapes_{split}_{index:05d}'
        img_names.add(stem + '.jpg')
        ann_names.add(stem + '.png')
        _write_bytes(img_dir / (stem + '.jpg'), _encode_jpeg(image))
        _write_bytes(ann_dir / (stem + '.png'),
                     _encode_png(semantic_label(shapes, size)))
    _remove_stale(img_dir, f'shapes_{split}_', img_names)
    _remove_stale(ann_dir, f'shapes_{split}_', ann_names)
    return dict(images=num)


def generate(out, sets: str = 'all', num_train=None, num_val=None,
             size: int = 128, seed: int = 0) -> Dict:
    """Generate the demo data; ``num_train/num_val`` override the defaults
    of every set written. Returns a summary dict."""
    if sets not in SETS:
        raise ToolError(f'sets must be one of {SETS}, got {sets!r}')
    for name, value in (('num_train', num_train), ('num_val', num_val)):
        if value is not None:
            cli.count(name, value)
    cli.positive_shape('size', size)
    cli.count('seed', seed, 0)
    out = cli.output_dir('out', out)
    summary = {}
    chosen = ('coco', 'ade') if sets == 'all' else (sets, )
    for data_set in chosen:
        counts = dict(DEFAULT_COUNTS[data_set])
        if num_train is not None:
            counts['train'] = num_train
        if num_val is not None:
            counts['val'] = num_val
        maker = make_coco if data_set == 'coco' else make_ade
        for split in ('train', 'val'):
            summary[f'{data_set}/{split}'] = maker(out, split, counts[split],
                                                   size, seed)
    return summary


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Generate the bundled demo data (rendered shapes with '
        'exact masks) in COCO and ADE20K layouts.')
    parser.add_argument(
        '--out', default='data/demo', help='output root (default: %(default)s)')
    parser.add_argument(
        '--sets', default='all', choices=SETS, help='which data sets')
    parser.add_argument(
        '--num-train',
        type=int,
        default=None,
        help='training images per set (default: COCO 300, ADE 200)')
    parser.add_argument(
        '--num-val',
        type=int,
        default=None,
        help='validation images per set (default: 50)')
    parser.add_argument(
        '--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0, help='base seed')
    args = parser.parse_args(argv)
    for name in ('num_train', 'num_val'):
        if getattr(args, name) is not None:
            cli.count('--' + name.replace('_', '-'), getattr(args, name))
    cli.positive_shape('--size', args.size)
    cli.count('--seed', args.seed, 0, what='numpy takes non-negative seeds')
    cli.output_dir('--out', args.out)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    summary = generate(args.out, args.sets, args.num_train, args.num_val,
                       args.size, args.seed)
    for key, value in summary.items():
        print(f'{key}: ' + ', '.join(f'{v} {k}' for k, v in value.items()))
    print(f'written under {args.out}')
    return 0


if __name__ == '__main__':
    run(main)
