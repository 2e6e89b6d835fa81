"""Convert an official Container-Light checkpoint (allenai/container) to the
mmvitmix layout.

Usage::

    python tools/model_converters/container2mmvitmix.py \
        container_light.pth checkpoints/container/container_light_in1k.pth

The ImageNet classifier ``head`` is dropped; the final BatchNorm ``norm``
becomes the stage-4 output norm ``norm3``. The output norms of stages 0-2
are not in the official file and start at their initial value.
"""
from mmvitmix.models.backbones.container_light import convert_container
from mmvitmix.apis.cli import run
from mmvitmix.models.converters import main

if __name__ == '__main__':
    run(lambda argv: main(convert_container,
         'Convert an official Container-Light checkpoint to mmvitmix.', argv))
