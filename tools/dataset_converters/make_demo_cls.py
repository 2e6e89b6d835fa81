"""Crop the bundled demo shapes into a folder-per-class classification set.

Reads the COCO demo set made by ``make_demo_data.py`` (default
``data/demo/coco``: 128x128 JPEGs, classes ``circle``, ``square``,
``triangle``) and writes every instance of the ``train`` and ``val`` splits
as a PNG crop in MMPretrain's ``CustomDataset`` layout::

    <out>/train/circle/*.png  <out>/train/square/*.png  ...
    <out>/val/circle/*.png    ...

Each crop is the square around the instance's box (side = ``--context``
times the longer box side, at least 8 pixels), centred on the box; the parts
outside the image are filled by replicating the border. Crops keep their
native size (the configs resize them). File names are
``<split>_<image id>_<annotation id>.png``. The output depends only on the
input files: running it twice gives byte-identical files (PNG, no
randomness). Stale PNGs in the class folders are removed.

Usage::

    python tools/dataset_converters/make_demo_cls.py --out data/demo/cls
"""
import argparse
import json
import math
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
from mmvitmix.apis import cli
from mmvitmix.apis.cli import ToolError, run

SPLITS = ('train', 'val')
MIN_SIDE = 8


def square_crop(image: np.ndarray, bbox: List[float],
                context: float) -> np.ndarray:
    """The square window around ``bbox`` (x, y, w, h), border-replicated."""
    x, y, w, h = bbox
    cx, cy = x + w / 2, y + h / 2
    side = max(MIN_SIDE, int(round(max(w, h) * context)))
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    height, width = image.shape[:2]
    pad = max(0, -x0, -y0, x0 + side - width, y0 + side - height)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad,
                                   cv2.BORDER_REPLICATE)
    return image[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]


def read_split(src: Path, split: str) -> dict:
    """The COCO annotations of ``split``, checked: they parse, every
    annotation names a known image and class, every image file exists."""
    ann_file = cli.existing_file('--src', src / 'annotations' /
                                 f'instances_{split}.json')
    try:
        coco = json.loads(ann_file.read_text())
        images = {img['id']: img['file_name'] for img in coco['images']}
        classes = {c['id'] for c in coco['categories']}
        refs = [(a['image_id'], a['category_id'], a['bbox'])
                for a in coco['annotations']]
    except (ValueError, KeyError, TypeError) as exc:
        raise ToolError(f'--src: {str(ann_file)!r} is not a COCO instances '
                        f'file ({type(exc).__name__}: {exc}); expected the '
                        'layout of make_demo_data.py') from exc
    for image_id, category_id, _ in refs:
        if image_id not in images or category_id not in classes:
            raise ToolError(f'--src: {str(ann_file)!r} has an annotation of '
                            f'image {image_id!r} / category '
                            f'{category_id!r}, which it does not list')
    for name in images.values():
        if not (src / split / name).is_file():
            raise ToolError(f'--src: image {str(src / split / name)!r} of '
                            f'{str(ann_file)!r} does not exist')
    return coco


def convert_split(src: Path, out: Path, split: str,
                  context: float, coco: dict = None) -> Dict[str, int]:
    """Write the crops of one split; return the count per class."""
    if coco is None:
        coco = read_split(src, split)
    classes = {c['id']: c['name'] for c in coco['categories']}
    images = {img['id']: img for img in coco['images']}
    counts = {name: 0 for name in classes.values()}
    written = {name: set() for name in classes.values()}
    for name in classes.values():
        (out / split / name).mkdir(parents=True, exist_ok=True)
    cache = {}
    for ann in sorted(coco['annotations'], key=lambda a: a['id']):
        if ann.get('iscrowd', 0):
            continue
        info = images[ann['image_id']]
        if info['id'] not in cache:
            cache.clear()  # annotations are grouped by image: keep one
            image = cv2.imread(str(src / split / info['file_name']))
            if image is None:
                raise FileNotFoundError(src / split / info['file_name'])
            cache[info['id']] = image
        crop = square_crop(cache[info['id']], ann['bbox'], context)
        name = classes[ann['category_id']]
        file_name = f'{split}_{info["id"]:05d}_{ann["id"]:05d}.png'
        ok, data = cv2.imencode('.png', crop)
        assert ok
        (out / split / name / file_name).write_bytes(data.tobytes())
        written[name].add(file_name)
        counts[name] += 1
    for name, keep in written.items():
        for path in (out / split / name).glob('*.png'):
            if path.name not in keep:
                path.unlink()
    return counts


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='crop the demo COCO shapes into a classification set')
    parser.add_argument(
        '--src', default='data/demo/coco', help='the COCO demo set')
    parser.add_argument(
        '--out', default='data/demo/cls', help='output folder')
    parser.add_argument(
        '--context',
        type=float,
        default=1.25,
        help='crop side as a multiple of the longer box side')
    args = parser.parse_args(argv)
    if not (math.isfinite(args.context) and args.context > 0):
        raise ToolError(f'--context {args.context}: give a number > 0 (the '
                        'crop side as a multiple of the longer box side)')
    cli.existing_dir('--src', args.src, [
        f'annotations/instances_{split}.json' for split in SPLITS])
    cli.output_dir('--out', args.out)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    src, out = Path(args.src), Path(args.out)
    cocos = {split: read_split(src, split) for split in SPLITS}
    for split in SPLITS:
        counts = convert_split(src, out, split, args.context, cocos[split])
        print(f'{split}: ' + ', '.join(f'{k} {v}' for k, v in counts.items()))
    return 0


if __name__ == '__main__':
    run(main)
