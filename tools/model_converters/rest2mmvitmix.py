"""Convert an official ResT v1 checkpoint (wofmanaf/ResT) to the mmvitmix
layout.

Usage::

    python tools/model_converters/rest2mmvitmix.py \
        rest_small.pth checkpoints/rest/rest_small_mmvitmix.pth

The ImageNet classifier ``head`` is dropped; the final LayerNorm ``norm``
becomes the stage-4 output norm ``norm3``. The output norms of stages 0-2
are not in the official file and start at weight 1, bias 0. A detectron2
file written by the official ``convert_to_d2.py`` (``backbone.bottom_up.``
prefix) is accepted as well.
"""
from mmvitmix.models.backbones.rest import convert_rest
from mmvitmix.models.converters import main

if __name__ == '__main__':
    main(convert_rest, 'Convert an official ResT v1 checkpoint to mmvitmix.')
