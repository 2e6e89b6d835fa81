"""Container-Light: Container: Context Aggregation Network (NeurIPS 2021).

Peng Gao, Jiasen Lu, Hongsheng Li, Roozbeh Mottaghi, Aniruddha Kembhavi.
https://arxiv.org/abs/2106.01401 ::

    @inproceedings{gao2021container,
      title={Container: Context Aggregation Network},
      author={Gao, Peng and Lu, Jiasen and Li, Hongsheng and Mottaghi,
              Roozbeh and Kembhavi, Aniruddha},
      booktitle={NeurIPS}, year={2021}}

The architecture follows the official release (allenai/container,
``models.py``, ``container_v1_light``). Every stage starts with a patch
embedding (conv with kernel = stride = patch size, then LayerNorm over
channels); the total stride is 4·2·2·2 = 32. All blocks work on NCHW maps:

* stages 1-3, *static affinity* (official ``CBlock``)::

      x = x + DWConv3x3(x)                                  # position embed
      x = x + Conv1x1(DWConv5x5(Conv1x1(BN(x))))            # static affinity
      x = x + Conv1x1(GELU(Conv1x1(BN(x))))                 # conv MLP

* stage 4, *mixed affinity* (official ``MixBlock``)::

      x = x + DWConv3x3(x)
      q, k, v = split(Conv1x1(BN(x)))                       # one 1x1 conv
      a = softmax(q kᵀ / sqrt(d)) v                         # 16 heads, all HW
      c = DWConv5x5(v)
      x = x + Conv1x1(sigmoid(w)·a + (1 - sigmoid(w))·c)    # learnable w
      x = x + Conv1x1(GELU(Conv1x1(BN(x))))

The attention is plain softmax attention and runs through
:func:`torch.nn.functional.scaled_dot_product_attention` (FlashAttention /
memory-efficient kernels on GPU, no explicit HW×HW matrix);
:func:`container_attention_reference` is the explicit form it is tested
against.

Differences from the official module, none of which changes the function on
the official 224×224 input:

* any input size is accepted (the official ``PatchEmbed`` asserts 224×224).
  With ``patch_padding='corner'`` (default) a map whose side is not a multiple
  of the patch size is zero-padded at the bottom/right before each patch
  embedding (as mmdet's Swin ``PatchEmbed(padding='corner')``), so stage ``i``
  has ``ceil(H / stride_i)`` rows and no pixel is dropped; with
  ``patch_padding=None`` the convs floor (``floor(H / stride_i)``) and the
  last ``H mod stride`` rows/columns are ignored, as the plain conv does.
* output norms ``norm{i}`` per requested stage; ``norm3`` takes the official
  classifier's final BatchNorm (``norm.*``), the others start fresh.
* dropout (official ``drop_rate``/``attn_drop_rate``, 0 in every release) is
  not exposed.

Official ImageNet checkpoints (``{'model': state_dict}``) are converted by
:func:`convert_container`, at load time or with
``tools/model_converters/container2mmvitmix.py``.
"""
import math
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.logging import print_log
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from mmvitmix.registry import MODELS
from ..utils.bricks import ConvMlp
from ..converters import (Rule, convert_state, drop_prefixes, one_based,
                          rename_rules, strip_prefix_if_all, unwrap_state_dict)
from .base import VitMixBackbone, check_numbers, run_blocks

# --------------------------------------------------------------------------
# attention core
# --------------------------------------------------------------------------


def container_attention_reference(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Explicit softmax attention, ``softmax(q kᵀ · d^-1/2) v``.

    The official ``Attention_pure`` computation; materialises the N×N map.

    Args:
        q, k, v (Tensor): (B, heads, N, d).

    Returns:
        Tensor: (B, heads, N, d).
    """
    scale = q.shape[-1]**-0.5
    attn = (q @ k.transpose(-2, -1)) * scale
    return attn.softmax(dim=-1) @ v


def container_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Softmax attention of the mixed block through PyTorch's fused SDPA.

    Same function as :func:`container_attention_reference` (default scale
    ``d ** -0.5``, no mask, no dropout); on GPU PyTorch picks FlashAttention
    or the memory-efficient kernel, on CPU its fused / math kernel.

    Args:
        q, k, v (Tensor): (B, heads, N, d), last dim contiguous.

    Returns:
        Tensor: (B, heads, N, d).
    """
    return F.scaled_dot_product_attention(q, k, v)


# --------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Conv (kernel = stride = patch size) then LayerNorm over channels.

    Args:
        in_channels (int): input channels.
        embed_dims (int): output channels.
        patch_size (int): kernel size and stride.
        padding (str | None): ``'corner'`` pads the bottom/right with zeros
            to a multiple of ``patch_size`` (ceil); None floors.
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int,
                 padding: Optional[str]):
        super().__init__()
        self.patch_size = patch_size
        self.padding = padding
        self.proj = nn.Conv2d(
            in_channels, embed_dims, patch_size, stride=patch_size)
        # official: nn.LayerNorm(embed_dim), eps 1e-5
        self.norm = build_norm_layer(dict(type='LN'), embed_dims)[1]

    def forward(self, x: Tensor) -> Tensor:
        if self.padding == 'corner':
            pad_h = -x.shape[-2] % self.patch_size
            pad_w = -x.shape[-1] % self.patch_size
            if pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)
        x = self.norm(x.permute(0, 2, 3, 1))
        return x.permute(0, 3, 1, 2).contiguous()


class StaticAffinityBlock(nn.Module):
    """Stages 1-3 (official ``CBlock``): a depthwise 5x5 conv as affinity.

    Args:
        embed_dims (int): channels.
        mlp_ratio (float): hidden channels of the conv MLP / ``embed_dims``.
        drop_path (float): stochastic depth of both residual branches.
        norm_cfg (dict): the two norms (official BatchNorm2d).
    """

    def __init__(self, embed_dims: int, mlp_ratio: float, drop_path: float,
                 norm_cfg: dict):
        super().__init__()
        self.pos_embed = nn.Conv2d(
            embed_dims, embed_dims, 3, padding=1, groups=embed_dims)
        self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.proj_in = nn.Conv2d(embed_dims, embed_dims, 1)
        self.affinity = nn.Conv2d(
            embed_dims, embed_dims, 5, padding=2, groups=embed_dims)
        self.proj_out = nn.Conv2d(embed_dims, embed_dims, 1)
        self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.mlp = ConvMlp(embed_dims, int(embed_dims * mlp_ratio))
        self.drop_path = (
            DropPath(drop_path) if drop_path > 0 else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.pos_embed(x)
        y = self.proj_out(self.affinity(self.proj_in(self.norm1(x))))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MixedAffinityBlock(nn.Module):
    """Stage 4 (official ``MixBlock``): attention and a depthwise conv mixed.

    One 1x1 conv makes q, k, v (channels ``[0, C)``, ``[C, 2C)``,
    ``[2C, 3C)``, each split into ``num_heads`` contiguous heads); softmax
    attention runs over all H·W positions, a depthwise 5x5 conv runs on v,
    and the two are blended as ``sigmoid(w)·attn + (1 - sigmoid(w))·conv``
    with a learnable scalar ``w`` (``mix_weight``, initialised to 0).

    Args:
        embed_dims (int): channels C (a multiple of ``num_heads``).
        num_heads (int): attention heads.
        mlp_ratio (float): hidden channels of the conv MLP / C.
        drop_path (float): stochastic depth of both residual branches.
        norm_cfg (dict): the two norms (official BatchNorm2d).
    """

    def __init__(self, embed_dims: int, num_heads: int, mlp_ratio: float,
                 drop_path: float, norm_cfg: dict):
        super().__init__()
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.pos_embed = nn.Conv2d(
            embed_dims, embed_dims, 3, padding=1, groups=embed_dims)
        self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.qkv = nn.Conv2d(embed_dims, 3 * embed_dims, 1)
        self.local = nn.Conv2d(
            embed_dims, embed_dims, 5, padding=2, groups=embed_dims)
        self.proj_out = nn.Conv2d(embed_dims, embed_dims, 1)
        self.mix_weight = nn.Parameter(torch.zeros(1))
        self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.mlp = ConvMlp(embed_dims, int(embed_dims * mlp_ratio))
        self.drop_path = (
            DropPath(drop_path) if drop_path > 0 else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.pos_embed(x)
        bsz, channels, height, width = x.shape
        qkv = self.qkv(self.norm1(x))
        conv = self.local(qkv[:, 2 * channels:])
        # (B, 3C, H, W) -> (3, B, heads, HW, d), contiguous for the kernels
        # explicit sizes (no -1), so that a batch of 0 images reshapes too
        tokens = qkv.reshape(bsz, 3, self.num_heads,
                             channels // self.num_heads, height * width).permute(1, 0, 2, 4,
                                                     3).contiguous()
        attn = container_attention(tokens[0], tokens[1], tokens[2])
        # (B, heads, HW, d) -> (B, C, H, W), channel = head * d + i
        attn = attn.transpose(1, 2).reshape(bsz, height * width, channels)
        attn = attn.reshape(bsz, height, width, channels).permute(0, 3, 1, 2)
        weight = torch.sigmoid(self.mix_weight)
        y = self.proj_out(weight * attn + (1 - weight) * conv)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


@contextmanager
def _frozen_bn_statistics(module: nn.Module):
    """Run ``module``'s BatchNorms without updating their running stats.

    Used for the recomputation of an activation-checkpointed block: the
    forward pass already updated the statistics once, and in training mode
    BatchNorm normalises with the batch statistics, so the recomputed
    output is unchanged while the running statistics are updated only once.
    """
    saved = []
    for m in module.modules():
        if isinstance(m, _BatchNorm) and m.training:
            tracked = (m.num_batches_tracked.clone()
                       if m.num_batches_tracked is not None else None)
            saved.append((m, m.momentum, tracked))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


class ContainerStage(nn.Module):
    """Patch embedding followed by the stage's blocks."""

    def __init__(self, patch_embed: PatchEmbed, blocks: List[nn.Module],
                 with_cp: bool):
        super().__init__()
        self.patch_embed = patch_embed
        self.blocks = nn.ModuleList(blocks)
        self.with_cp = with_cp

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        return run_blocks(
            self.blocks,
            x,
            with_cp=self.with_cp,
            recompute_context=_frozen_bn_statistics)


# --------------------------------------------------------------------------
# the backbone
# --------------------------------------------------------------------------


@MODELS.register_module()
class ContainerLight(VitMixBackbone):
    """Container-Light backbone for detection, segmentation and
    classification.

    Args:
        arch (str | dict): ``'light'`` (official ``container_v1_light``) or a
            dict with the official constructor's names: ``embed_dim, depth,
            num_heads, mlp_ratio`` (required; ``num_heads`` is one int, used
            by stage 4) and ``patch_size`` (default ``[4, 2, 2, 2]``),
            ``qkv_bias`` (default True; accepted for compatibility, it has
            no effect in the official model, whose qkv 1x1 conv always has a
            bias). Default: ``'light'``.
        in_channels (int): input channels. Default: 3.
        out_indices (int | Sequence[int]): stages whose outputs are returned
            (NCHW, strides 4/8/16/32). Default: (0, 1, 2, 3).
        drop_path_rate (float): stochastic depth, linear over all blocks
            (official ImageNet training: 0.1). Default: 0.1.
        patch_padding (str | None): ``'corner'`` zero-pads each patch
            embedding's input at the bottom/right to a multiple of its patch
            size (stage ``i`` is ``ceil(H / stride_i)`` high); None floors
            (``floor(H / stride_i)``, trailing rows/columns ignored).
            Default: ``'corner'``.
        norm_cfg (dict): the two norms of every block (official:
            BatchNorm2d; ``dict(type='SyncBN')`` for multi-GPU training with
            ``norm_eval=False``). Default: ``dict(type='BN')``.
        out_norm_cfg (dict | None): output norm per requested stage;
            ``norm3`` receives the official final BatchNorm when it is a
            BatchNorm type; an ``'LN'`` type normalises over channels. None
            for no output norms. Default: ``dict(type='BN')``.
        frozen_stages (int): -1 nothing, 0 the first patch embedding (the
            stem), N the stem and stages 0..N-1. Default: -1.
        norm_eval (bool): keep every BatchNorm (block norms and output
            norms) in eval mode while training: batch statistics are
            neither used nor updated, the affine weights still train unless
            frozen. Default: False.
        with_cp (bool): activation checkpointing per block; BatchNorm
            running statistics are updated once, as without it.
            Default: False.
        init_cfg (dict | None): ``dict(type='Pretrained', checkpoint=PATH)``
            loads an official or converted checkpoint. Default: None.
    """

    arch_settings = {
        'light': dict(
            embed_dim=[64, 128, 320, 512],
            depth=[3, 4, 8, 3],
            num_heads=16,
            mlp_ratio=[8, 8, 4, 4],
            qkv_bias=True,
            patch_size=[4, 2, 2, 2]),
    }
    arch_keys = ('embed_dim', 'depth', 'num_heads', 'mlp_ratio')
    arch_optional = dict(qkv_bias=True, patch_size=[4, 2, 2, 2])
    patch_paddings = ('corner', None)

    def __init__(self,
                 arch: Union[str, dict] = 'light',
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.1,
                 patch_padding: Optional[str] = 'corner',
                 norm_cfg: dict = dict(type='BN'),
                 out_norm_cfg: Optional[dict] = dict(type='BN'),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None,
                 **kwargs):
        self.reject_unknown_kwargs(kwargs)
        super().__init__(init_cfg=init_cfg)
        arch = self.parse_arch(arch)
        self._check_arch(arch)
        if patch_padding not in self.patch_paddings:
            raise ValueError(
                f'ContainerLight: patch_padding must be one of '
                f'{list(self.patch_paddings)}, got {patch_padding!r}')
        self.arch = arch
        dpr = self.init_common(
            in_channels=in_channels,
            out_indices=out_indices,
            frozen_stages=frozen_stages,
            norm_eval=norm_eval,
            with_cp=with_cp,
            drop_path_rate=drop_path_rate,
            num_blocks=sum(arch['depth']))
        self.patch_padding = patch_padding
        self.embed_dims = list(arch['embed_dim'])
        # total stride: the smallest input that leaves stage 4 one pixel
        self.min_input_size = math.prod(arch['patch_size'])

        depths = arch['depth']
        self.stages = nn.ModuleList()
        for i in range(self.num_stages):
            dims = self.embed_dims[i]
            patch_embed = PatchEmbed(
                in_channels if i == 0 else self.embed_dims[i - 1], dims,
                arch['patch_size'][i], patch_padding)
            rates = dpr[sum(depths[:i]):sum(depths[:i + 1])]
            if i < self.num_stages - 1:
                blocks = [
                    StaticAffinityBlock(dims, arch['mlp_ratio'][i], rate,
                                        norm_cfg) for rate in rates
                ]
            else:
                blocks = [
                    MixedAffinityBlock(dims, arch['num_heads'],
                                       arch['mlp_ratio'][i], rate, norm_cfg)
                    for rate in rates
                ]
            self.stages.append(ContainerStage(patch_embed, blocks, with_cp))

        self.build_out_norms(out_norm_cfg, self.embed_dims)
        self._freeze_stages()

    def _check_arch(self, arch: dict) -> None:
        for key in ('embed_dim', 'depth', 'mlp_ratio', 'patch_size'):
            value = arch[key]
            if not isinstance(value, (list, tuple)) or len(value) != 4:
                raise ValueError(
                    f'ContainerLight: arch[{key!r}] must be a list of '
                    f'{self.num_stages} entries, got {value!r}')
        for key in ('embed_dim', 'depth', 'patch_size'):
            if any(not isinstance(v, int) or v < 1 for v in arch[key]):
                raise ValueError(
                    f'ContainerLight: arch[{key!r}] entries must be positive '
                    f'ints, got {arch[key]!r}')
        check_numbers('ContainerLight', "arch['mlp_ratio']", arch['mlp_ratio'],
                      low=0, low_open=True)
        heads = arch['num_heads']
        if not isinstance(heads, int) or heads < 1:
            raise ValueError(
                'ContainerLight: arch["num_heads"] must be a positive int '
                f'(the heads of stage 4), got {heads!r}')
        if arch['embed_dim'][3] % heads:
            raise ValueError(
                f'ContainerLight: stage-4 embed_dim {arch["embed_dim"][3]} '
                f'must be a multiple of num_heads {heads}')
        if not isinstance(arch['qkv_bias'], bool):
            raise ValueError('ContainerLight: arch["qkv_bias"] must be a '
                             f'bool, got {arch["qkv_bias"]!r}')

    def stage_modules(self, index: int) -> List[nn.Module]:
        # the stem is stage 0's patch embedding; stage i > 0 starts with
        # its own (downsampling) patch embedding
        if index < 0:
            return [self.stages[0].patch_embed]
        return [self.stages[index], getattr(self, f'norm{index}', None)]

    def adapt_converted_state(self, state: Dict[str, Tensor]) -> dict:
        """Drop the official final BatchNorm when ``norm3`` cannot take it.

        :func:`convert_container` maps the classifier's final BatchNorm
        (``norm.*``) onto ``norm3``; without a BatchNorm ``norm3`` (stage 4
        not requested, or a non-BN ``out_norm_cfg``) it is dropped here, and
        said so, rather than reported as unexpected or loaded into a
        different kind of norm.
        """
        norm3 = getattr(self, 'norm3', None)
        if isinstance(norm3, _BatchNorm):
            return state
        dropped = sorted(k for k in state if k.startswith('norm3.'))
        if dropped:
            print_log(
                'ContainerLight: the checkpoint\'s final BatchNorm is not '
                'used (norm3 is not a BatchNorm output norm here): '
                f'{dropped}',
                logger='current')
        return {k: v for k, v in state.items() if not k.startswith('norm3.')}

    def forward(self, x: Tensor) -> tuple:
        """(B, C, H, W) -> tuple of (B, C_i, H_i, W_i) per ``out_indices``.

        ``H_i = ceil(H / s_i)`` with ``patch_padding='corner'``, ``floor``
        with None, for the cumulative strides ``s_i`` (4, 8, 16, 32).
        """
        self.check_input(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(self.apply_out_norm(i, x).contiguous())
        return tuple(outs)


# --------------------------------------------------------------------------
# official checkpoint conversion
# --------------------------------------------------------------------------

#: classification-only part of the official model, dropped on purpose
CONTAINER_CLASSIFIER_PREFIXES = ('head.', )
#: block sub-keys shared by both block types (official -> ours)
_CONTAINER_COMMON_RENAMES = {
    'pos_embed.': 'pos_embed.',
    'norm1.': 'norm1.',
    'norm2.': 'norm2.',
    'mlp.fc1.': 'mlp.fc1.',
    'mlp.fc2.': 'mlp.fc2.',
    'conv2.': 'proj_out.',
}
#: official ``CBlock`` (stages 1-3)
_CONTAINER_STATIC_RENAMES = {
    'conv1.': 'proj_in.',
    'attn.': 'affinity.',
}
#: official ``MixBlock`` (stage 4)
_CONTAINER_MIX_RENAMES = {
    'conv1.': 'qkv.',
    'conv.': 'local.',
}
_STAGE = {0: one_based}  # official stage k (1-4) -> our stage k - 1
_OURS = 'stages.{0}.blocks.{1}.'
#: the official layout (``container_v1_light``)
CONTAINER_RULES = (
    drop_prefixes(CONTAINER_CLASSIFIER_PREFIXES),
    # the final BatchNorm is the stage-4 output norm
    Rule(r'norm\.(.*)', 'norm3.{0}'),
    Rule(r'patch_embed([1-4])\.((?:proj|norm)\..*)',
         'stages.{0}.patch_embed.{1}', groups=_STAGE),
    *rename_rules(r'blocks([1-4])\.([^.]+)\.', _OURS,
                  _CONTAINER_COMMON_RENAMES, _STAGE),
    *rename_rules(r'blocks([1-3])\.([^.]+)\.', _OURS,
                  _CONTAINER_STATIC_RENAMES, _STAGE),
    *rename_rules(r'blocks(4)\.([^.]+)\.', _OURS, _CONTAINER_MIX_RENAMES,
                  _STAGE),
    Rule(r'blocks4\.([^.]+)\.sa_weight', 'stages.3.blocks.{0}.mix_weight'),
)


def convert_container(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Convert an official Container-Light checkpoint to
    :class:`ContainerLight`'s layout.

    Accepts the ImageNet release (``patch_embed{1-4}.*``, ``blocks{1-4}.*``,
    final BatchNorm ``norm.*``, classifier ``head.*``), wrapped or not, with
    or without a ``backbone.`` prefix. A state dict already in mmvitmix
    layout is returned unchanged. ``norm.*`` becomes the stage-4 output norm
    ``norm3.*``; ``head.*`` is dropped; every other key must match a rule of
    :data:`CONTAINER_RULES`, else ``KeyError``.
    """
    state_dict = strip_prefix_if_all(unwrap_state_dict(state_dict),
                                     'backbone.')
    return convert_state(
        state_dict,
        CONTAINER_RULES,
        'convert_container',
        already_converted=('stages.', ))


ContainerLight.converter = staticmethod(convert_container)
