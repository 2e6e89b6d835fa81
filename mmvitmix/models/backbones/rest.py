"""ResT: An Efficient Transformer for Visual Recognition (NeurIPS 2021).

Qing-Long Zhang, Yu-Bin Yang.
https://arxiv.org/abs/2105.13677 ::

    @inproceedings{zhang2021rest,
      title={ResT: An Efficient Transformer for Visual Recognition},
      author={Zhang, Qinglong and Yang, Yu-bin},
      booktitle={NeurIPS}, year={2021}}

The architecture follows the official release (wofmanaf/ResT,
``models/rest.py``, ResT v1):

* a conv stem: 3×3/2 conv, BN, ReLU, 3×3 conv, BN, ReLU, 3×3/2 conv, then
  pixel attention (PA: ``x * sigmoid(DWConv3x3(x))``) as position encoding;
* before stages 2-4 a patch embedding: 3×3/2 conv, BN, PA;
* pre-norm transformer blocks with Efficient Multi-head Self-Attention
  (EMSA): queries at full resolution, keys and values from the tokens
  reduced by a depthwise conv (kernel ``sr + 1``, stride ``sr``) and a
  LayerNorm; the attention logits are mixed across heads by a 1×1 conv,
  soft-maxed and instance-normalised per head (the core lives in
  :func:`mmvitmix.ops.emsa.emsa_attention`); an MLP with GELU.

Output norms ``norm{i}`` are side branches: the network's own computation
is that of the ImageNet model, whatever ``out_indices`` asks for. (The
official detectron2 backbone puts its per-stage norms inside the main path,
see ``docs/rest.md``.) The ImageNet model's final ``norm`` becomes ``norm3``.

Official ImageNet checkpoints (``{'model': ResT state_dict}``) are converted
by :func:`convert_rest`, at load time or with
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
from .base import VitMixBackbone, check_numbers, records_grad, run_blocks

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


class ResTStem(nn.Module):
    """Stride-4 stem: conv3×3/2-BN-ReLU, conv3×3-BN-ReLU, conv3×3/2, PA."""

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: dict):
        super().__init__()
        hidden = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, 2, 1, bias=False)
        self.norm1 = build_norm_layer(norm_cfg, hidden)[1]
        self.conv2 = nn.Conv2d(hidden, hidden, 3, 1, 1, bias=False)
        self.norm2 = build_norm_layer(norm_cfg, hidden)[1]
        self.conv3 = nn.Conv2d(hidden, out_channels, 3, 2, 1, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.pa = PixelAttention(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.conv1(x)))
        x = self.act(self.norm2(self.conv2(x)))
        return self.pa(self.conv3(x))


class PatchEmbed(nn.Module):
    """Stride-2 patch embedding between stages: conv3×3/2, BN, PA (NCHW)."""

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: dict):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.norm = build_norm_layer(norm_cfg, out_channels)[1]
        self.pa = PixelAttention(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.pa(self.norm(self.conv(x)))


class EMSA(nn.Module):
    """Efficient Multi-head Self-Attention on (B, N, C) tokens.

    Args:
        embed_dims (int): channels C.
        num_heads (int): heads.
        qkv_bias (bool): bias of the q and kv projections.
        sr_ratio (int): spatial reduction of keys and values; > 1 adds a
            depthwise conv (kernel ``sr + 1``, stride ``sr``, padding
            ``sr // 2``) followed by a LayerNorm.
        apply_transform (bool): 1×1 conv across heads on the logits and
            InstanceNorm of the attention maps (only with more than 1 head,
            as officially).
    """

    def __init__(self, embed_dims: int, num_heads: int, qkv_bias: bool,
                 sr_ratio: int, apply_transform: bool,
                 attn_backend: str = 'auto'):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (embed_dims // num_heads)**-0.5
        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, embed_dims * 2, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(
                embed_dims,
                embed_dims,
                kernel_size=sr_ratio + 1,
                stride=sr_ratio,
                padding=sr_ratio // 2,
                groups=embed_dims)
            self.sr_norm = build_norm_layer(dict(type='LN'), embed_dims)[1]
        self.apply_transform = bool(apply_transform) and num_heads > 1
        if self.apply_transform:
            self.transform_conv = nn.Conv2d(num_heads, num_heads, 1)
        self.attn_backend = attn_backend

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        bsz, num_tokens, channels = x.shape
        heads = self.num_heads
        head_dims = channels // heads
        # explicit sizes (no -1), so that a batch of 0 images reshapes too
        q = self.q(x).reshape(bsz, num_tokens, heads,
                              head_dims).transpose(1, 2)
        if self.sr_ratio > 1:
            x_ = x.reshape(bsz, *hw_shape, channels).permute(0, 3, 1, 2)
            x_ = self.sr(x_).flatten(2).transpose(1, 2)
            x_ = self.sr_norm(x_)
        else:
            x_ = x
        kv = self.kv(x_).reshape(bsz, x_.shape[1], 2, heads, head_dims)
        k, v = kv.permute(2, 0, 3, 1, 4)
        if self.apply_transform:
            weight = self.transform_conv.weight.reshape(heads, heads)
            bias = self.transform_conv.bias
        else:
            weight = bias = None
        out = emsa_attention(q, k, v, self.scale, weight, bias, 1e-5,
                             backend=self.attn_backend)
        out = out.transpose(1, 2).reshape(bsz, num_tokens, channels)
        return self.proj(out)


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 on tokens."""

    def __init__(self, embed_dims: int, hidden_dims: int):
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ResTBlock(nn.Module):
    """x + EMSA(LN(x)), then x + MLP(LN(x)), with stochastic depth."""

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float,
                 qkv_bias: bool,
                 sr_ratio: int,
                 apply_transform: bool,
                 drop_path: float = 0.,
                 attn_backend: str = 'auto'):
        super().__init__()
        self.norm1 = build_norm_layer(dict(type='LN'), embed_dims)[1]
        self.attn = EMSA(embed_dims, num_heads, qkv_bias, sr_ratio,
                         apply_transform, attn_backend)
        self.norm2 = build_norm_layer(dict(type='LN'), embed_dims)[1]
        self.ffn = Mlp(embed_dims, int(embed_dims * mlp_ratio))
        self.drop_path = (
            DropPath(drop_path) if drop_path > 0 else nn.Identity())

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw_shape))
        return x + self.drop_path(self.ffn(self.norm2(x)))


class ResTStage(nn.Module):
    """Optional patch embedding, then the stage's blocks; NCHW in and out."""

    def __init__(self,
                 in_dims: Optional[int],
                 embed_dims: int,
                 depth: int,
                 num_heads: int,
                 mlp_ratio: float,
                 qkv_bias: bool,
                 sr_ratio: int,
                 apply_transform: bool,
                 drop_paths: Sequence[float],
                 norm_cfg: dict,
                 with_cp: bool = False,
                 attn_backend: str = 'auto'):
        super().__init__()
        self.patch_embed = (
            PatchEmbed(in_dims, embed_dims, norm_cfg)
            if in_dims is not None else None)
        self.blocks = nn.ModuleList([
            ResTBlock(embed_dims, num_heads, mlp_ratio, qkv_bias, sr_ratio,
                      apply_transform, drop_paths[i], attn_backend)
            for i in range(depth)
        ])
        self.with_cp = with_cp

    def forward(self, x: Tensor) -> Tensor:
        if self.patch_embed is not None:
            x = self.patch_embed(x)
        bsz, channels, height, width = x.shape
        hw_shape = (height, width)  # from the conv's actual output
        # token-major (B, N, C) memory for the blocks' norms and linears: a
        # view of channels-last memory, one copy of NCHW memory (instead of
        # a strided residual stream that every norm would copy)
        x = x.permute(0, 2, 3, 1).reshape(bsz, height * width, channels)
        x = run_blocks(self.blocks, x, hw_shape, with_cp=self.with_cp)
        # NCHW shape over channels-last memory (a view)
        return x.reshape(bsz, height, width, channels).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------
# the backbone
# --------------------------------------------------------------------------


@MODELS.register_module()
class ResT(VitMixBackbone):
    """ResT (v1) backbone for detection, segmentation and classification.

    Args:
        arch (str | dict): ``'lite'``, ``'small'``, ``'base'``, ``'large'``
            (official rest_lite / rest_small / rest_base / rest_large) or a
            dict with the official constructor's names: ``embed_dims,
            num_heads, mlp_ratios, qkv_bias, depths, sr_ratios,
            apply_transform`` (all required). Default: ``'small'``.
        in_channels (int): input channels. Default: 3.
        out_indices (int | Sequence[int]): stages whose outputs are returned
            (NCHW, strides 4/8/16/32). Default: (0, 1, 2, 3).
        drop_path_rate (float): stochastic depth, linear over all blocks
            (official detection recipe: 0.1 for lite/small, 0.2 for
            base/large). Default: 0.1.
        norm_cfg (dict): norm of the stem and patch embeddings (official:
            BatchNorm; use ``dict(type='SyncBN')`` for multi-GPU training).
            Default: ``dict(type='BN')``.
        out_norm_cfg (dict | None): output norm added per requested stage as
            a side branch (official: LayerNorm, eps 1e-5; ``norm3`` takes the
            ImageNet model's final ``norm``); None for none.
            Default: ``dict(type='LN')``.
        frozen_stages (int): -1 nothing, 0 the stem, N the stem and stages
            0..N-1. Default: -1.
        norm_eval (bool): keep BatchNorm layers in eval mode while training.
            Default: False.
        with_cp (bool): activation checkpointing per block. Default: False.
        attn_backend (str): implementation of the EMSA core: ``'auto'``
            (the measured fastest for the device, see docs/benchmarks.md;
            ``MMVITMIX_ATTN_BACKEND`` overrides it), ``'fused'`` (CUDA
            tensors only), ``'reference'``, ``'sdpa'`` or ``'flex'``
            (:mod:`mmvitmix.ops.backends`; with head mixing ``'sdpa'`` is
            torch's matmul/softmax on an exact reformulation and ``'flex'``
            runs it too). Default: ``'auto'``.
        init_cfg (dict | None): ``dict(type='Pretrained', checkpoint=PATH)``
            loads an official or converted checkpoint. Default: None.
    """

    arch_settings = {
        'lite': dict(
            embed_dims=[64, 128, 256, 512],
            num_heads=[1, 2, 4, 8],
            mlp_ratios=[4, 4, 4, 4],
            qkv_bias=True,
            depths=[2, 2, 2, 2],
            sr_ratios=[8, 4, 2, 1],
            apply_transform=True),
        'small': dict(
            embed_dims=[64, 128, 256, 512],
            num_heads=[1, 2, 4, 8],
            mlp_ratios=[4, 4, 4, 4],
            qkv_bias=True,
            depths=[2, 2, 6, 2],
            sr_ratios=[8, 4, 2, 1],
            apply_transform=True),
        'base': dict(
            embed_dims=[96, 192, 384, 768],
            num_heads=[1, 2, 4, 8],
            mlp_ratios=[4, 4, 4, 4],
            qkv_bias=True,
            depths=[2, 2, 6, 2],
            sr_ratios=[8, 4, 2, 1],
            apply_transform=True),
        'large': dict(
            embed_dims=[96, 192, 384, 768],
            num_heads=[1, 2, 4, 8],
            mlp_ratios=[4, 4, 4, 4],
            qkv_bias=True,
            depths=[2, 2, 18, 2],
            sr_ratios=[8, 4, 2, 1],
            apply_transform=True),
    }
    arch_keys = ('embed_dims', 'num_heads', 'mlp_ratios', 'qkv_bias',
                 'depths', 'sr_ratios', 'apply_transform')
    _per_stage_keys = ('embed_dims', 'num_heads', 'mlp_ratios', 'depths',
                       'sr_ratios')

    def __init__(self,
                 arch: Union[str, dict] = 'small',
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.1,
                 norm_cfg: dict = dict(type='BN'),
                 out_norm_cfg: Optional[dict] = dict(type='LN'),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 attn_backend: str = 'auto',
                 init_cfg: Optional[dict] = None,
                 **kwargs):
        self.reject_unknown_kwargs(kwargs)
        super().__init__(init_cfg=init_cfg)
        self.attn_backend = check_backend(attn_backend, 'ResT: attn_backend')
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
        embed_dims = arch['embed_dims']
        self.embed_dims = list(embed_dims)

        self.stem = ResTStem(in_channels, embed_dims[0], norm_cfg)

        depths = arch['depths']
        self.stages = nn.ModuleList()
        for i in range(self.num_stages):
            self.stages.append(
                ResTStage(
                    in_dims=embed_dims[i - 1] if i > 0 else None,
                    embed_dims=embed_dims[i],
                    depth=depths[i],
                    num_heads=arch['num_heads'][i],
                    mlp_ratio=arch['mlp_ratios'][i],
                    qkv_bias=bool(arch['qkv_bias']),
                    sr_ratio=arch['sr_ratios'][i],
                    apply_transform=bool(arch['apply_transform']),
                    drop_paths=dpr[sum(depths[:i]):sum(depths[:i + 1])],
                    norm_cfg=norm_cfg,
                    with_cp=with_cp,
                    attn_backend=attn_backend))

        self.build_out_norms(out_norm_cfg, embed_dims)
        self.apply(self._init_module)
        self._freeze_stages()

    def _check_arch(self, arch: dict) -> None:
        for key in self._per_stage_keys:
            value = arch[key]
            if not isinstance(value, (list, tuple)) or len(
                    value) != self.num_stages:
                raise ValueError(
                    f'ResT: arch[{key!r}] must be a list of '
                    f'{self.num_stages} entries, got {value!r}')
        for key in ('embed_dims', 'num_heads', 'depths', 'sr_ratios'):
            check_numbers('ResT', f'arch[{key!r}]', arch[key], integer=True,
                          low=1)
        check_numbers('ResT', "arch['mlp_ratios']", arch['mlp_ratios'], low=0,
                      low_open=True)
        for dims, heads in zip(arch['embed_dims'], arch['num_heads']):
            if dims % heads:
                raise ValueError(
                    f'ResT: embed_dims {dims} must split evenly into '
                    f'{heads} heads')
        if arch['embed_dims'][0] % 2:
            raise ValueError('ResT: embed_dims[0] must be even (the stem '
                             f'uses half of it), got {arch["embed_dims"][0]}')
        for ratio in arch['sr_ratios']:
            if not isinstance(ratio, int) or ratio < 1:
                raise ValueError('ResT: sr_ratios must be positive ints, got '
                                 f'{arch["sr_ratios"]!r}')

    @staticmethod
    def _init_module(m: nn.Module) -> None:
        """Official init: trunc-normal(0.02) Conv2d / Linear weights, zero
        Linear biases, LayerNorm / BatchNorm weight 1 bias 0."""
        if isinstance(m, nn.Conv2d):
            trunc_normal_(m.weight, std=.02)
        elif isinstance(m, nn.Linear):
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
        # inference: the stem's convs take channels-last memory as it is
        # (oneDNN reorders NCHW around every conv); see RMT.forward
        if not records_grad(self.stem):
            x = x.contiguous(memory_format=torch.channels_last)
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

#: classification-only parts of the official ImageNet ResT, dropped on purpose
REST_CLASSIFIER_PREFIXES = ('head.', )
_STAGE = {0: one_based}  # official stage k (1-4) -> our stage k - 1
#: the official layouts (ImageNet ResT v1; detectron2 adds norm1..3)
REST_RULES = (
    drop_prefixes(REST_CLASSIFIER_PREFIXES),
    Rule(r'stem\.((?:conv1|norm1|conv2|norm2|conv3)(?:\..*)?)', 'stem.{0}'),
    Rule(r'stem\.pos\.pa_conv\.(.*)', 'stem.pa.conv.{0}'),
    Rule(r'patch_embed_([234])\.((?:conv|norm)(?:\..*)?)',
         'stages.{0}.patch_embed.{1}', groups=_STAGE),
    Rule(r'patch_embed_([234])\.pos\.pa_conv\.(.*)',
         'stages.{0}.patch_embed.pa.conv.{1}', groups=_STAGE),
    Rule(r'stage([1-4])\.(\d+)\.mlp\.(.*)', 'stages.{0}.blocks.{1}.ffn.{2}',
         groups=_STAGE),
    Rule(r'stage([1-4])\.(\d+)\.((?:norm1|norm2|attn)\..*)',
         'stages.{0}.blocks.{1}.{2}', groups=_STAGE),
    # the ImageNet model's final norm is the stage-4 output norm
    Rule(r'norm\.(.*)', 'norm3.{0}'),
    # detectron2: the output norm after stage k
    Rule(r'norm([123])\.(.*)', 'norm{0}.{1}', groups=_STAGE),
)


def convert_rest(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Convert an official ResT v1 checkpoint to the :class:`ResT` layout.

    Accepts the ImageNet release (``stem.*``, ``patch_embed_{2,3,4}.*``,
    ``stage{1-4}.{j}.*``, final ``norm.*``, classifier ``head.*``) or the
    official detectron2 backbone (the same plus per-stage ``norm{1,2,3}``),
    wrapped (``model`` / ``state_dict``) or not, with or without a
    ``backbone.bottom_up.`` / ``backbone.`` prefix. A state dict already in
    mmvitmix layout (``stages.*`` keys) is returned unchanged.

    Renames (:data:`REST_RULES`): ``stem.pos.pa_conv`` -> ``stem.pa.conv``;
    ``patch_embed_{k}.{conv,norm,pos.pa_conv}`` ->
    ``stages.{k-1}.patch_embed.{conv,norm,pa.conv}``; ``stage{k}.{j}.*`` ->
    ``stages.{k-1}.blocks.{j}.*`` with ``mlp`` -> ``ffn``; final ``norm`` ->
    ``norm3`` (the stage-4 output norm); detectron2 ``norm{k}`` (after stage
    k) -> ``norm{k-1}``. The classifier ``head.*`` is dropped; every other
    key must match a rule, else ``KeyError``.
    """
    state_dict = unwrap_state_dict(state_dict)
    state_dict = strip_prefix_if_all(state_dict, 'backbone.')
    state_dict = strip_prefix_if_all(state_dict, 'bottom_up.')
    return convert_state(
        state_dict,
        REST_RULES,
        'convert_rest',
        already_converted=('stages.', ))


ResT.converter = staticmethod(convert_rest)
