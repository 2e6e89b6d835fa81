"""Convert an MMPretrain RIFormer checkpoint to the mmvitmix layout.

Usage::

    python tools/model_converters/riformer2mmvitmix.py \
        riformer-s12_32xb128_in1k_20230406-6741ce71.pth riformer_s12.pth

Training-structure (``token_mixer.affine``) and deploy-structure
(``norm_reparam``) files both convert; the result loads into a backbone of
either structure. MMPretrain's interleaved ``network.{n}`` becomes
``stages.{i}``, its output norms ``norm0/2/4/6`` become ``norm0..3``, and the
classifier (``head.*``, ``neck.*``) is dropped.
"""
from mmvitmix.models.backbones.riformer import convert_riformer
from mmvitmix.apis.cli import run
from mmvitmix.models.converters import main

if __name__ == '__main__':
    run(lambda argv: main(convert_riformer,
         'Convert an MMPretrain RIFormer checkpoint to mmvitmix.', argv))
