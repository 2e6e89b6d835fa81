"""Layers more than one backbone uses, written once."""
import torch.nn as nn
from mmcv.cnn import build_activation_layer
from torch import Tensor


class ConvMlp(nn.Module):
    """1×1 conv -> activation -> dropout -> 1×1 conv -> dropout, on NCHW.

    Container's ``CMlp`` (GELU, no dropout) and MMPretrain's PoolFormer /
    RIFormer ``Mlp``; parameter names ``fc1`` and ``fc2`` as in both
    official releases. (MMPretrain's own ``Mlp`` is not imported: detection
    and segmentation users need not install MMPretrain.)

    Args:
        embed_dims (int): input and output channels.
        hidden_dims (int): hidden channels.
        act_cfg (dict): activation. Default: ``dict(type='GELU')``.
        drop (float): dropout after the activation and after ``fc2``.
            Default: 0.
    """

    def __init__(self,
                 embed_dims: int,
                 hidden_dims: int,
                 act_cfg: dict = dict(type='GELU'),
                 drop: float = 0.):
        super().__init__()
        self.fc1 = nn.Conv2d(embed_dims, hidden_dims, 1)
        self.act = build_activation_layer(act_cfg)
        self.fc2 = nn.Conv2d(hidden_dims, embed_dims, 1)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))
