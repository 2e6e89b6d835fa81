"""ResT V2: Simpler, Faster and Stronger (NeurIPS 2022).

Qing-Long Zhang, Yu-Bin Yang.
https://arxiv.org/abs/2204.07366 ::

    @inproceedings{zhang2022rest,
      title={ResT V2: Simpler, Faster and Stronger},
      author={Zhang, Qing-Long and Yang, Yu-Bin},
      booktitle={NeurIPS}, year={2022}}

The architecture follows the official release (wofmanaf/ResT,
``models/rest_v2.py``; the detectron2 and mmseg 0.x backbones,
``object_detection/restv2/restv2.py`` and
``semantic_segmentation/backbone/rest_v2.py``, compute the same function):

* a conv stem: 3×3/2 conv, BN, ReLU, 3×3/2 conv, BN, ReLU, 1×1 conv, then
  pixel attention (PA: ``x * sigmoid(DWConv3x3(x))``) and a LayerNorm;
* before stages 2-4 a patch embedding: 3×3/2 conv, PA, LayerNorm;
* pre-norm transformer blocks (LayerNorms with eps 1e-6) with v2's
  attention: queries at full resolution, keys and values from the tokens
  reduced by a depthwise conv (kernel ``sr + 1``, stride ``sr``) and a
  LayerNorm, plain softmax attention (v1's head interaction and instance
  norm are gone, so it runs torch's SDPA), plus an upsampling branch: the
  values, back on their reduced grid, through a depthwise 3×3 conv to
  ``sr²`` channels each and a pixel shuffle to full resolution, then a
  LayerNorm, added to the attention output before the projection; an MLP
  with ratio 4 and GELU.

Sizes. The official code reshapes the reduced values to ``H // sr`` ×
``W // sr`` and runs only on inputs whose sides are multiples of 32 (the
detectron2 backbone declares ``size_divisibility = 32``). Here every stage
takes the sizes its convs actually produce: the reduced grid is
``ceil(H / sr)``, its pixel shuffle covers ``sr * ceil(H / sr) >= H`` rows
and the top-left ``H × W`` are kept. On multiples of 32 this is exactly the
official computation; other sizes from 32×32 up run too (docs/restv2.md).

Output norms ``norm{i}`` (LayerNorm over the channels, eps 1e-6, as the
official detection and segmentation backbones' ``norm_{i+1}``) are side
branches: the main path is the ImageNet model's. The ImageNet model's final
``norm`` becomes ``norm3``.

Official checkpoints (ImageNet ``{'model': ...}``, detectron2 files with
``backbone.bottom_up.``, mmseg 0.x files with ``backbone.``) are converted
by :func:`convert_restv2`, at load time or with
``tools/model_converters/rest2mmvitmix.py``.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor

from mmvitmix.ops.backends import check_backend
from mmvitmix.ops.emsa import emsa_attention
from mmvitmix.registry import MODELS
from ..converters import (Rule, convert_state, drop_prefixes, one_based,
                          strip_prefix_if_all, unwrap_state_dict)
from .base import VitMixBackbone, check_numbers, run_blocks

#: LayerNorm of every ResT v2 token norm (official: eps 1e-6)
LN_CFG = dict(type='LN', eps=1e-6)

# --------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------


class PixelAttention(nn.Module):
    """PA position encoding: ``x * sigmoid(DWConv3x3(x))`` on NCHW maps."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(
            channels, channels, 3, padding=1, groups=channels)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.conv(x))


def _tokens_normed(norm: nn.Module, x: Tensor) -> Tensor:
    """LayerNorm ``norm`` over the channels of NCHW ``x``; NHWC result."""
    return norm(x.permute(0, 2, 3, 1))


class ResTV2Stem(nn.Module):
    """Stride-4 stem: conv3×3/2-BN-ReLU, conv3×3/2-BN-ReLU, conv1×1, PA,
    LayerNorm. NCHW in, NHWC (normalised tokens on the grid) out."""

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: dict):
        super().__init__()
        hidden = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, 2, 1, bias=False)
        self.norm1 = build_norm_layer(norm_cfg, hidden)[1]
        self.conv2 = nn.Conv2d(hidden, out_channels, 3, 2, 1, bias=False)
        self.norm2 = build_norm_layer(norm_cfg, out_channels)[1]
        self.conv3 = nn.Conv2d(out_channels, out_channels, 1)
        self.act = nn.ReLU(inplace=True)
        self.pa = PixelAttention(out_channels)
        self.norm = build_norm_layer(LN_CFG, out_channels)[1]

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.conv1(x)))
        x = self.act(self.norm2(self.conv2(x)))
        return _tokens_normed(self.norm, self.pa(self.conv3(x)))


class ResTV2PatchEmbed(nn.Module):
    """Stride-2 patch embedding between stages: conv3×3/2, PA, LayerNorm.
    NCHW in, NHWC out."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.pa = PixelAttention(out_channels)
        self.norm = build_norm_layer(LN_CFG, out_channels)[1]

    def forward(self, x: Tensor) -> Tensor:
        return _tokens_normed(self.norm, self.pa(self.conv(x)))


def pixel_shuffle(x: Tensor, factor: int) -> Tensor:
    """``torch.nn.functional.pixel_shuffle`` by reshape and permute (the
    same values), whose backward also takes a batch of 0 images (torch's
    PixelShuffle backward rejects it)."""
    if factor == 1:
        return x
    bsz, channels, height, width = x.shape
    out_channels = channels // (factor * factor)
    x = x.reshape(bsz, out_channels, factor, factor, height, width)
    return x.permute(0, 1, 4, 2, 5, 3).reshape(bsz, out_channels,
                                               height * factor,
                                               width * factor)


class ResTV2Attention(nn.Module):
    """ResT v2 attention on (B, N, C) tokens.

    Args:
        embed_dims (int): channels C.
        num_heads (int): heads.
        sr_ratio (int): spatial reduction of keys and values; > 1 adds a
            depthwise conv (kernel ``sr + 1``, stride ``sr``, padding
            ``sr // 2``) and a LayerNorm. Also the pixel-shuffle factor of
            the upsampling branch.
    """

    def __init__(self, embed_dims: int, num_heads: int, sr_ratio: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (embed_dims // num_heads)**-0.5
        self.q = nn.Linear(embed_dims, embed_dims)
        self.kv = nn.Linear(embed_dims, embed_dims * 2)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(
                embed_dims,
                embed_dims,
                kernel_size=sr_ratio + 1,
                stride=sr_ratio,
                padding=sr_ratio // 2,
                groups=embed_dims)
            self.sr_norm = build_norm_layer(LN_CFG, embed_dims)[1]
        # the upsampling branch: sr² channels per value channel, shuffled
        self.up_conv = nn.Conv2d(
            embed_dims,
            sr_ratio * sr_ratio * embed_dims,
            kernel_size=3,
            padding=1,
            groups=embed_dims)
        self.up_norm = build_norm_layer(LN_CFG, embed_dims)[1]
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.attn_backend = 'auto'  # set by ResTV2 (see its attn_backend)

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        bsz, num_tokens, channels = x.shape
        height, width = hw_shape
        heads = self.num_heads
        head_dims = channels // heads
        # explicit sizes (no -1), so that a batch of 0 images reshapes too
        q = self.q(x).reshape(bsz, num_tokens, heads,
                              head_dims).transpose(1, 2)
        if self.sr_ratio > 1:
            x_ = x.reshape(bsz, height, width, channels).permute(0, 3, 1, 2)
            x_ = self.sr(x_)
            red_h, red_w = x_.shape[-2:]
            x_ = self.sr_norm(x_.flatten(2).transpose(1, 2))
        else:
            x_, red_h, red_w = x, height, width
        kv = self.kv(x_).reshape(bsz, red_h * red_w, 2, heads, head_dims)
        k, v = kv.permute(2, 0, 3, 1, 4)
        # no head interaction: plain softmax attention (torch's SDPA unless
        # the reference is asked for)
        out = emsa_attention(q, k, v, self.scale, None, None,
                             backend=self.attn_backend)
        out = out.transpose(1, 2).reshape(bsz, num_tokens, channels)
        # the values (channel = head * head_dims + d, as officially) on
        # their reduced grid, upsampled back to the queries' grid
        # (dense channels-last memory: a strided view would make the conv
        # copy it to NCHW)
        identity = v.transpose(1, 2).reshape(
            bsz, red_h, red_w, channels).contiguous().permute(0, 3, 1, 2)
        identity = pixel_shuffle(self.up_conv(identity), self.sr_ratio)
        # the top-left height x width (a no-op view on multiples of sr;
        # unconditional, so that an exported graph crops at every size)
        identity = identity[:, :, :height, :width]
        identity = self.up_norm(identity.flatten(2).transpose(1, 2))
        return self.proj(out + identity)


class ResTV2Mlp(nn.Module):
    """fc1 -> GELU -> fc2 on tokens (ratio 4, as officially)."""

    def __init__(self, embed_dims: int, hidden_dims: int):
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ResTV2Block(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x)), with stochastic depth."""

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 sr_ratio: int,
                 drop_path: float = 0.):
        super().__init__()
        self.norm1 = build_norm_layer(LN_CFG, embed_dims)[1]
        self.attn = ResTV2Attention(embed_dims, num_heads, sr_ratio)
        self.norm2 = build_norm_layer(LN_CFG, embed_dims)[1]
        self.ffn = ResTV2Mlp(embed_dims, 4 * embed_dims)
        self.drop_path = (
            DropPath(drop_path) if drop_path > 0 else nn.Identity())

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw_shape))
        return x + self.drop_path(self.ffn(self.norm2(x)))


class ResTV2Stage(nn.Module):
    """Optional patch embedding, then the stage's blocks.

    Input: NCHW (with a patch embedding) or the stem's NHWC tokens (stage
    0); output NCHW.
    """

    def __init__(self,
                 in_dims: Optional[int],
                 embed_dims: int,
                 depth: int,
                 num_heads: int,
                 sr_ratio: int,
                 drop_paths: Sequence[float],
                 with_cp: bool = False):
        super().__init__()
        self.patch_embed = (
            ResTV2PatchEmbed(in_dims, embed_dims)
            if in_dims is not None else None)
        self.blocks = nn.ModuleList([
            ResTV2Block(embed_dims, num_heads, sr_ratio, drop_paths[i])
            for i in range(depth)
        ])
        self.with_cp = with_cp

    def forward(self, x: Tensor) -> Tensor:
        if self.patch_embed is not None:
            x = self.patch_embed(x)
        bsz, height, width, channels = x.shape
        x = x.reshape(bsz, height * width, channels)
        x = run_blocks(
            self.blocks, x, (height, width), with_cp=self.with_cp)
        # NCHW shape over channels-last memory (a view)
        return x.reshape(bsz, height, width, channels).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------
# the backbone
# --------------------------------------------------------------------------


@MODELS.register_module()
class ResTV2(VitMixBackbone):
    """ResT v2 backbone for detection, segmentation and classification.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'``, ``'large'``
            (official restv2_tiny / small / base / large) or a dict with the
            official constructor's names: ``embed_dims`` and ``depths``
            (required), ``num_heads`` (default ``[1, 2, 4, 8]``) and
            ``sr_ratios`` (default ``[8, 4, 2, 1]``). Default: ``'tiny'``.
        in_channels (int): input channels. Default: 3.
        out_indices (int | Sequence[int]): stages whose outputs are returned
            (NCHW, strides 4/8/16/32). Default: (0, 1, 2, 3).
        drop_path_rate (float): stochastic depth, linear over all blocks
            (official detection recipes: 0.1 / 0.2 / 0.3 for tiny / small /
            base). Default: 0.1.
        norm_cfg (dict): norm of the stem's two convs (official: BatchNorm;
            ``dict(type='SyncBN')`` for multi-GPU training).
            Default: ``dict(type='BN')``.
        out_norm_cfg (dict | None): output norm added per requested stage as
            a side branch (official detection / segmentation backbones:
            LayerNorm over the channels, eps 1e-6; ``norm3`` takes the
            ImageNet model's final ``norm``); None for none.
            Default: ``dict(type='LN', eps=1e-6)``.
        frozen_stages (int): -1 nothing, 0 the stem, N the stem and stages
            0..N-1. Default: -1.
        norm_eval (bool): keep BatchNorm layers in eval mode while training.
            Default: False.
        with_cp (bool): activation checkpointing per block. Default: False.
        attn_backend (str): ``'auto'``, ``'sdpa'``, ``'flex'``, ``'fused'``
            or ``'reference'`` (:mod:`mmvitmix.ops.backends`). ResT v2's
            attention has no head interaction, so every backend but
            ``'reference'`` (plain matmul and softmax, as the official code)
            runs torch's SDPA. Default: ``'auto'``.
        init_cfg (dict | None): ``dict(type='Pretrained', checkpoint=PATH)``
            loads an official or converted checkpoint. Default: None.
    """

    arch_settings = {
        'tiny': dict(
            embed_dims=[96, 192, 384, 768],
            num_heads=[1, 2, 4, 8],
            depths=[1, 2, 6, 2],
            sr_ratios=[8, 4, 2, 1]),
        'small': dict(
            embed_dims=[96, 192, 384, 768],
            num_heads=[1, 2, 4, 8],
            depths=[1, 2, 12, 2],
            sr_ratios=[8, 4, 2, 1]),
        'base': dict(
            embed_dims=[96, 192, 384, 768],
            num_heads=[1, 2, 4, 8],
            depths=[1, 3, 16, 3],
            sr_ratios=[8, 4, 2, 1]),
        'large': dict(
            embed_dims=[128, 256, 512, 1024],
            num_heads=[2, 4, 8, 16],
            depths=[2, 3, 16, 2],
            sr_ratios=[8, 4, 2, 1]),
    }
    arch_keys = ('embed_dims', 'depths')
    arch_optional = dict(num_heads=[1, 2, 4, 8], sr_ratios=[8, 4, 2, 1])
    _per_stage_keys = ('embed_dims', 'num_heads', 'depths', 'sr_ratios')

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.1,
                 norm_cfg: dict = dict(type='BN'),
                 out_norm_cfg: Optional[dict] = LN_CFG,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 attn_backend: str = 'auto',
                 init_cfg: Optional[dict] = None,
                 **kwargs):
        self.reject_unknown_kwargs(kwargs)
        super().__init__(init_cfg=init_cfg)
        self.attn_backend = check_backend(attn_backend,
                                          'ResTV2: attn_backend')
        arch = self.parse_arch(arch)
        self._check_arch(arch)
        self.arch = arch
        dpr = self.init_common(
            in_channels=in_channels,
            out_indices=out_indices,
            frozen_stages=frozen_stages,
            norm_eval=norm_eval,
            with_cp=with_cp,
            drop_path_rate=drop_path_rate,
            num_blocks=sum(arch['depths']))
        embed_dims = list(arch['embed_dims'])
        self.embed_dims = embed_dims

        self.stem = ResTV2Stem(in_channels, embed_dims[0], norm_cfg)
        depths = arch['depths']
        self.stages = nn.ModuleList()
        for i in range(self.num_stages):
            self.stages.append(
                ResTV2Stage(
                    in_dims=embed_dims[i - 1] if i > 0 else None,
                    embed_dims=embed_dims[i],
                    depth=depths[i],
                    num_heads=arch['num_heads'][i],
                    sr_ratio=arch['sr_ratios'][i],
                    drop_paths=dpr[sum(depths[:i]):sum(depths[:i + 1])],
                    with_cp=with_cp))

        self.build_out_norms(out_norm_cfg, embed_dims)

        for module in self.modules():
            if isinstance(module, ResTV2Attention):
                module.attn_backend = attn_backend
        self.apply(self._init_module)
        self._freeze_stages()

    def _check_arch(self, arch: dict) -> None:
        for key in self._per_stage_keys:
            value = arch[key]
            if not isinstance(value, (list, tuple)) or len(
                    value) != self.num_stages:
                raise ValueError(
                    f'ResTV2: arch[{key!r}] must be a list of '
                    f'{self.num_stages} entries, got {value!r}')
        for key in self._per_stage_keys:
            check_numbers('ResTV2', f'arch[{key!r}]', arch[key],
                          integer=True, low=1)
        for dims, heads in zip(arch['embed_dims'], arch['num_heads']):
            if dims % heads:
                raise ValueError(
                    f'ResTV2: embed_dims {dims} must split evenly into '
                    f'{heads} heads')
        if arch['embed_dims'][0] % 2:
            raise ValueError('ResTV2: embed_dims[0] must be even (the stem '
                             f'uses half of it), got {arch["embed_dims"][0]}')

    @staticmethod
    def _init_module(m: nn.Module) -> None:
        """Official init: trunc-normal(0.02) Conv2d / Linear weights, zero
        biases, LayerNorm / BatchNorm weight 1 bias 0."""
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
            if m.weight is not None:
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0)

    def stage_modules(self, index: int) -> List[nn.Module]:
        if index < 0:
            return [self.stem]
        return [self.stages[index], getattr(self, f'norm{index}', None)]

    def forward(self, x: Tensor) -> tuple:
        """(B, C, H, W) -> tuple of (B, C_i, H_i, W_i) per ``out_indices``."""
        self.check_input(x)
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                # a side branch: the main path stays untouched
                outs.append(self.apply_out_norm(i, x).contiguous())
        return tuple(outs)


# --------------------------------------------------------------------------
# official checkpoint conversion
# --------------------------------------------------------------------------

#: classification-only parts of the official ImageNet ResT v2
RESTV2_CLASSIFIER_PREFIXES = ('head.', )
_STAGE = {0: one_based}  # official stage k (1-4) -> our stage k - 1
_STEM_CONVS = {'0': 'conv1', '1': 'norm1', '3': 'conv2', '4': 'norm2',
               '6': 'conv3'}
#: the official layouts (ImageNet ``models/rest_v2.py``; the detectron2
#: backbone adds ``norm_{k}.0.*``, the mmseg 0.x backbone ``norm_{k}.*``)
RESTV2_RULES = (
    drop_prefixes(RESTV2_CLASSIFIER_PREFIXES),
    Rule(r'stem\.proj\.([01346])\.(.*)', 'stem.{0}.{1}',
         groups={0: _STEM_CONVS.__getitem__}),
    Rule(r'stem\.pos\.pa_conv\.(.*)', 'stem.pa.conv.{0}'),
    Rule(r'stem\.norm\.(.*)', 'stem.norm.{0}'),
    Rule(r'patch_([234])\.proj\.(.*)', 'stages.{0}.patch_embed.conv.{1}',
         groups=_STAGE),
    Rule(r'patch_([234])\.pos\.pa_conv\.(.*)',
         'stages.{0}.patch_embed.pa.conv.{1}', groups=_STAGE),
    Rule(r'patch_([234])\.norm\.(.*)', 'stages.{0}.patch_embed.norm.{1}',
         groups=_STAGE),
    Rule(r'stage([1-4])\.(\d+)\.mlp\.(.*)', 'stages.{0}.blocks.{1}.ffn.{2}',
         groups=_STAGE),
    Rule(r'stage([1-4])\.(\d+)\.attn\.up\.0\.(.*)',
         'stages.{0}.blocks.{1}.attn.up_conv.{2}', groups=_STAGE),
    Rule(
        r'stage([1-4])\.(\d+)\.((?:norm1|norm2|attn\.(?:q|kv|sr|sr_norm|'
        r'up_norm|proj))\..*)',
        'stages.{0}.blocks.{1}.{2}',
        groups=_STAGE),
    # the ImageNet model's final norm is the stage-4 output norm
    Rule(r'norm\.(.*)', 'norm3.{0}'),
    # detectron2 (norm_{k}.0.*) and mmseg 0.x (norm_{k}.*): after stage k
    Rule(r'norm_([1-4])\.(?:0\.)?(.*)', 'norm{0}.{1}', groups=_STAGE),
)


def is_restv2_state(state_dict: Dict[str, Tensor]) -> bool:
    """True for an official ResT v2 state dict (ImageNet, detectron2 or
    mmseg 0.x layout, any ``backbone.`` / ``bottom_up.`` / ``module.``
    prefix) or an mmvitmix :class:`ResTV2` one; False for ResT v1."""
    state_dict = unwrap_state_dict(state_dict)
    for key in state_dict:
        for prefix in ('module.', 'backbone.', 'bottom_up.'):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith(('stem.proj.', 'patch_2.', 'patch_3.',
                           'patch_4.')) or '.attn.up.0.' in key or (
                               '.attn.up_conv.' in key):
            return True
    return False


def convert_restv2(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Convert an official ResT v2 checkpoint to the :class:`ResTV2` layout.

    Accepts the ImageNet release (``stem.proj.{0,1,3,4,6}``, ``stem.pos``,
    ``stem.norm``, ``patch_{2,3,4}.*``, ``stage{1-4}.{j}.*``, final
    ``norm.*``, classifier ``head.*``), the official detectron2 backbone
    (the same without ``norm``/``head``, plus ``norm_{k}.0.*``) and the mmseg
    0.x backbone (``norm_{k}.*``), wrapped (``model`` / ``state_dict``) or
    not, with or without a ``module.``, ``backbone.bottom_up.`` or
    ``backbone.`` prefix. A state dict already in mmvitmix layout
    (``stages.*`` keys) is returned unchanged.

    Renames (:data:`RESTV2_RULES`): the stem's ``proj.{0,1,3,4,6}`` ->
    ``conv1, norm1, conv2, norm2, conv3``; ``pos.pa_conv`` -> ``pa.conv``;
    ``patch_{k}.proj`` -> ``stages.{k-1}.patch_embed.conv``;
    ``stage{k}.{j}.*`` -> ``stages.{k-1}.blocks.{j}.*`` with ``mlp`` ->
    ``ffn`` and ``attn.up.0`` -> ``attn.up_conv``; final ``norm`` ->
    ``norm3``; ``norm_{k}`` (after stage k) -> ``norm{k-1}``. The
    classifier ``head.*`` is dropped; every other key must match a rule,
    else ``KeyError``.
    """
    state_dict = unwrap_state_dict(state_dict)
    state_dict = strip_prefix_if_all(state_dict, 'module.')
    state_dict = strip_prefix_if_all(state_dict, 'backbone.')
    state_dict = strip_prefix_if_all(state_dict, 'bottom_up.')
    return convert_state(
        state_dict,
        RESTV2_RULES,
        'convert_restv2',
        already_converted=('stages.', ))


ResTV2.converter = staticmethod(convert_restv2)


def convert_restv2_whole_model(
        state_dict: Dict[str, Tensor],
        out_indices: Optional[Sequence[int]] = None) -> Dict[str, Tensor]:
    """Convert the authors' trained ResT v2 detector (detectron2: Mask
    R-CNN, RetinaNet) or segmentor (mmseg 0.x: UperNet) checkpoint into
    the mmdet 3.x / mmseg 1.x model of our matching config.

    The backbone goes through :func:`convert_restv2` (``norm_{k}`` ->
    ``norm{k-1}``), the rest through
    :func:`mmvitmix.models.utils.whole_model.convert_whole_model`;
    ``out_indices``: the stages our config's backbone returns (the other
    output norms are dropped).
    """
    from ..utils.whole_model import convert_whole_model
    return convert_whole_model(state_dict, convert_restv2, out_indices,
                               'convert_restv2_whole_model')
