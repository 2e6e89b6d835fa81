"""Convert an official RMT checkpoint (qhfan/RMT) to the mmvitmix layout.

Usage::

    python tools/model_converters/rmt2mmvitmix.py RMT-T.pth rmt_t_mmvitmix.pth

The ImageNet classifier (``proj``, ``norm``, ``head``) is dropped; the
per-stage output norms ``norm{i}`` are not in the official file and start at
weight 1, bias 0.
"""
from _common import main

from mmvitmix.models.backbones.rmt import convert_rmt

if __name__ == '__main__':
    main(convert_rmt, 'Convert an official RMT checkpoint to mmvitmix.')
