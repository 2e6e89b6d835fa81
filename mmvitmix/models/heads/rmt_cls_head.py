"""RMT's official ImageNet classifier as an MMPretrain head."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader
from mmpretrain.models.heads import ClsHead

from mmvitmix.registry import MODELS
from mmvitmix.utils import allow_mmengine_checkpoints
from ..backbones.base import check_number
from ..converters import unwrap_state_dict

#: the official classifier's keys (``VisRetNet``: proj, norm, head)
RMT_HEAD_PREFIXES = ('proj.', 'norm.', 'head.')


@MODELS.register_module()
class RMTClsHead(ClsHead):
    """The official RMT classifier on the last stage's NCHW map.

    ``Linear(C, projection)`` per position, ``BatchNorm2d`` and Swish
    (SiLU), global average pooling, ``Linear(projection, num_classes)``
    (official ``VisRetNet``: ``proj``, ``norm``, ``swish``, ``avgpool``,
    ``head``; parameter names kept, so the official ImageNet checkpoint's
    classifier loads as it is). Use it with the backbone's last stage and
    no output norm (``out_indices=(3, ), out_norm_cfg=None``) and no neck,
    as the official model has none.

    Args:
        num_classes (int): classes.
        in_channels (int): channels of the last stage (RMT-T/S 512).
        projection (int): hidden width. Default: 1024 (all releases).
        init_cfg (dict | None): ``dict(type='Pretrained', checkpoint=PATH)``
            loads ``proj.* / norm.* / head.*`` of an official checkpoint
            (every one of the 7 tensors must be there, with the shapes of
            this head, else an error names them). Other init types as
            MMEngine's. Default: trunc-normal(0.02) Linear weights, zero
            biases, BatchNorm 1/0 (the official init).
        **kwargs: ``loss``, ``topk``, ``cal_acc`` of MMPretrain's
            ``ClsHead``.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 projection: int = 1024,
                 init_cfg: Optional[dict] = dict(
                     type='TruncNormal', layer='Linear', std=.02, bias=0.),
                 **kwargs):
        super().__init__(init_cfg=init_cfg, **kwargs)
        for name, value in (('num_classes', num_classes),
                            ('in_channels', in_channels),
                            ('projection', projection)):
            check_number('RMTClsHead', name, value, integer=True, low=1)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.proj = nn.Linear(in_channels, projection)
        self.norm = nn.BatchNorm2d(projection)
        self.swish = nn.SiLU()
        self.head = nn.Linear(projection, num_classes)

    def pre_logits(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        """(B, C, H, W) of the last stage -> pooled (B, projection)."""
        x = feats[-1]
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'RMTClsHead expects the last stage as (B, {self.in_channels}'
                f', H, W) (backbone out_indices=(3, ), no neck), got '
                f'{tuple(x.shape)}')
        x = self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self.swish(self.norm(x))
        return x.mean(dim=(2, 3))

    def forward(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        return self.head(self.pre_logits(feats))

    def init_weights(self) -> None:
        cfg = self.init_cfg
        if not (isinstance(cfg, dict) and cfg.get('type') == 'Pretrained'):
            super().init_weights()
            return
        unknown = sorted(set(cfg) - {'type', 'checkpoint', 'map_location'})
        if unknown:
            raise ValueError(f'RMTClsHead: Pretrained init_cfg has unknown '
                             f'keys {unknown}; accepted: checkpoint, '
                             'map_location')
        allow_mmengine_checkpoints()
        path = cfg['checkpoint']
        state = unwrap_state_dict(
            CheckpointLoader.load_checkpoint(
                path, map_location=cfg.get('map_location', 'cpu')))
        state = {
            k: v
            for k, v in state.items() if k.startswith(RMT_HEAD_PREFIXES)
        }
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise ValueError(
                f'RMTClsHead: {path} has no official RMT classifier keys '
                f'{missing} (an official ImageNet release has proj.*, norm.*'
                ' and head.*)')
        self.load_state_dict({k: state[k] for k in own}, strict=True)
        print_log(f'RMTClsHead: loaded proj, norm and head from {path}',
                  logger='current')
        self._is_init = True
