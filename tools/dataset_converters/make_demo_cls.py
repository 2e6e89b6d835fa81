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
import sys
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
from mmvitmix.apis.cli import run

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


def convert_split(src: Path, out: Path, split: str,
                  context: float) -> Dict[str, int]:
    """Write the crops of one split; return the count per class."""
    ann_file = src / 'annotations' / f'instances_{split}.json'
    coco = json.loads(ann_file.read_text())
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
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    src, out = Path(args.src), Path(args.out)
    for split in SPLITS:
        counts = convert_split(src, out, split, args.context)
        print(f'{split}: ' + ', '.join(f'{k} {v}' for k, v in counts.items()))
    return 0


if __name__ == '__main__':
    run(main)
