"""RIFormer: Keep Your Vision Backbone Effective But Removing Token Mixer.

Jiahao Wang, Songyang Zhang, Yong Liu, Taiqiang Wu, Yujiu Yang, Xihui Liu,
Kai Chen, Ping Luo, Dahua Lin (CVPR 2023).
https://arxiv.org/abs/2304.05659 ::

    @inproceedings{wang2023riformer,
      title={RIFormer: Keep Your Vision Backbone Effective But Removing Token
             Mixer},
      author={Wang, Jiahao and Zhang, Songyang and Liu, Yong and Wu, Taiqiang
              and Yang, Yujiu and Liu, Xihui and Chen, Kai and Luo, Ping and
              Lin, Dahua},
      booktitle={CVPR}, year={2023}}

The architecture follows the reference release in MMPretrain 1.2.0
(``mmpretrain/models/backbones/riformer.py``), which shares PoolFormer's
MetaFormer macro design: a 7×7/4 conv patch embedding, four stages of blocks
separated by 3×3/2 conv downsampling, GroupNorm(1) norms, layer scale and a
1×1-conv MLP. The training-time token mixer is a per-channel affine
transform minus the identity, ``a ⊙ x + b - x``; because it is linear per
channel and follows a per-channel-affine norm, it folds into that norm:

    (a - 1) ⊙ (w ⊙ x̂ + c) + b = [(a - 1) ⊙ w] ⊙ x̂ + [(a - 1) ⊙ c + b]

so the inference-time ("deploy") block is just ``x + γ₁ ⊙ norm'(x)`` followed
by the MLP branch. :meth:`RIFormer.switch_to_deploy` does that fold in place;
``deploy=True`` builds the inference structure directly. A state dict of
either structure loads into a backbone of either structure (folded or
unfolded on the fly, exactly).

MMPretrain checkpoints (``{'state_dict': {'backbone.network.…'}}``) are
converted by :func:`convert_riformer`, at load time or with
``tools/model_converters/riformer2mmvitmix.py``.
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor

from mmvitmix.registry import MODELS
from ..utils.bricks import ConvMlp
from ..converters import (DROP, Rule, convert_state, drop_prefixes, flat,
                          rename_rules, unwrap_state_dict)
from .base import (VitMixBackbone, check_number, check_flag, check_numbers,
                   run_blocks)

# --------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------


def fold_affine_into_norm(norm_weight: Tensor, norm_bias: Tensor,
                          mixer_weight: Tensor,
                          mixer_bias: Tensor) -> Tuple[Tensor, Tensor]:
    """Weight and bias of the norm that equals ``mixer(norm(x))``.

    ``mixer(y) = a * y + b - y`` per channel and ``norm(x) = w * x̂ + c``,
    hence ``mixer(norm(x)) = (a - 1) w * x̂ + ((a - 1) c + b)``.
    All arguments are 1-D per-channel tensors.
    """
    scale = mixer_weight - 1
    return norm_weight * scale, norm_bias * scale + mixer_bias


class AffineTokenMixer(nn.Module):
    """Training-time token mixer: ``weight * x + bias - x`` per channel.

    Args:
        embed_dims (int): number of channels.
    """

    def __init__(self, embed_dims: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(embed_dims))
        self.bias = nn.Parameter(torch.zeros(embed_dims))

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.view(1, -1, 1, 1)
        bias = self.bias.view(1, -1, 1, 1)
        return x * weight + bias - x


class RIFormerBlock(nn.Module):
    """``x + γ₁ mixer(norm1(x))`` then ``x + γ₂ mlp(norm2(x))`` (NCHW).

    In the deploy structure ``mixer ∘ norm1`` is one norm, ``norm_reparam``.

    Args:
        embed_dims (int): channels.
        mlp_ratio (float): hidden channels of the MLP over ``embed_dims``.
        norm_cfg (dict): norm config; it must build a norm with a
            per-channel affine ``weight`` and ``bias`` (GroupNorm,
            LayerNorm2d, BatchNorm) so that the mixer can fold into it.
        act_cfg (dict): activation of the MLP.
        drop (float): dropout of the MLP.
        drop_path (float): stochastic depth of both branches.
        layer_scale_init_value (float): initial value of γ₁, γ₂.
        deploy (bool): build the inference structure.
    """

    def __init__(self,
                 embed_dims: int,
                 mlp_ratio: float,
                 norm_cfg: dict,
                 act_cfg: dict,
                 drop: float = 0.,
                 drop_path: float = 0.,
                 layer_scale_init_value: float = 1e-5,
                 deploy: bool = False):
        super().__init__()
        self.deploy = deploy
        if deploy:
            self.norm_reparam = build_norm_layer(norm_cfg, embed_dims)[1]
        else:
            self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
            self.token_mixer = AffineTokenMixer(embed_dims)
        self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.ffn = ConvMlp(embed_dims, int(embed_dims * mlp_ratio), act_cfg,
                           drop)
        self.drop_path = (
            DropPath(drop_path) if drop_path > 0 else nn.Identity())
        self.gamma1 = nn.Parameter(
            layer_scale_init_value * torch.ones(embed_dims))
        self.gamma2 = nn.Parameter(
            layer_scale_init_value * torch.ones(embed_dims))

    def forward(self, x: Tensor) -> Tensor:
        if self.deploy:
            y = self.norm_reparam(x)
        else:
            y = self.token_mixer(self.norm1(x))
        x = x + self.drop_path(self.gamma1.view(1, -1, 1, 1) * y)
        y = self.ffn(self.norm2(x))
        return x + self.drop_path(self.gamma2.view(1, -1, 1, 1) * y)

    def switch_to_deploy(self) -> None:
        """Fold the token mixer into ``norm1`` (in place, idempotent)."""
        if self.deploy:
            return
        weight, bias = fold_affine_into_norm(self.norm1.weight.data,
                                             self.norm1.bias.data,
                                             self.token_mixer.weight.data,
                                             self.token_mixer.bias.data)
        # a copy keeps the norm's type, eps, groups and buffers (BN stats)
        fused = copy.deepcopy(self.norm1)
        fused.weight.data.copy_(weight)
        fused.bias.data.copy_(bias)
        del self.norm1
        del self.token_mixer
        self.norm_reparam = fused
        self.deploy = True

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Accept either structure's keys and convert them to ours.

        Deploy block + training keys: the mixer is folded into the norm.
        Training block + deploy keys: ``norm1`` takes the folded norm and
        the mixer becomes the identity map of the branch (``a = 2, b = 0``:
        ``2y - y = y``), which computes exactly the same function.
        """
        train_keys = [
            prefix + 'norm1.weight', prefix + 'norm1.bias',
            prefix + 'token_mixer.weight', prefix + 'token_mixer.bias'
        ]
        has_train = all(k in state_dict for k in train_keys)
        has_deploy = prefix + 'norm_reparam.weight' in state_dict
        if self.deploy and has_train and not has_deploy:
            norm_w, norm_b, mix_w, mix_b = (state_dict.pop(k)
                                            for k in train_keys)
            weight, bias = fold_affine_into_norm(norm_w, norm_b, mix_w,
                                                 mix_b)
            for key in [k for k in state_dict
                        if k.startswith(prefix + 'norm1.')]:
                state_dict[prefix + 'norm_reparam.' +
                           key[len(prefix + 'norm1.'):]] = state_dict.pop(key)
            state_dict[prefix + 'norm_reparam.weight'] = weight
            state_dict[prefix + 'norm_reparam.bias'] = bias
        elif not self.deploy and has_deploy and not has_train:
            for key in [k for k in state_dict
                        if k.startswith(prefix + 'norm_reparam.')]:
                state_dict[prefix + 'norm1.' +
                           key[len(prefix + 'norm_reparam.'):]] = \
                    state_dict.pop(key)
            ref = state_dict[prefix + 'norm1.weight']
            state_dict[prefix + 'token_mixer.weight'] = torch.full_like(
                ref, 2.)
            state_dict[prefix + 'token_mixer.bias'] = torch.zeros_like(ref)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)


class RIFormerStage(nn.Module):
    """Optional 3×3/2 conv downsampling, then the stage's blocks."""

    def __init__(self, in_dims: Optional[int], embed_dims: int,
                 blocks: List[RIFormerBlock], with_cp: bool):
        super().__init__()
        self.downsample = (
            nn.Conv2d(in_dims, embed_dims, 3, stride=2, padding=1)
            if in_dims is not None else None)
        self.blocks = nn.Sequential(*blocks)
        self.with_cp = with_cp

    def forward(self, x: Tensor) -> Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        return run_blocks(self.blocks, x, with_cp=self.with_cp)


# --------------------------------------------------------------------------
# the backbone
# --------------------------------------------------------------------------


@MODELS.register_module()
class RIFormer(VitMixBackbone):
    """RIFormer backbone for detection, segmentation and classification.

    Stage ``i`` of this backbone is MMPretrain's ``network[2i]`` (blocks)
    preceded by ``network[2i - 1]`` (downsampling): ``out_indices`` counts
    the four stages (0-3), not MMPretrain's interleaved positions 0-6, and
    MMPretrain's output norms ``norm0/2/4/6`` are ours ``norm0..3``.

    Args:
        arch (str | dict): ``'s12'``, ``'s24'``, ``'s36'``, ``'m36'``,
            ``'m48'`` or a dict with MMPretrain's keys ``layers`` and
            ``embed_dims`` (required, 4 entries each), ``mlp_ratios``
            (default ``[4, 4, 4, 4]``) and ``layer_scale_init_value``
            (default 1e-5). Stages are always separated by downsampling.
            Default: ``'s12'``.
        in_channels (int): input channels. Default: 3.
        out_indices (int | Sequence[int]): stages whose outputs are returned
            (NCHW, strides 4/8/16/32). Default: (0, 1, 2, 3).
        norm_cfg (dict): norm of the blocks; must have a per-channel affine
            weight and bias for the re-parameterisation.
            Default: ``dict(type='GN', num_groups=1)``.
        out_norm_cfg (dict | None): output norm added per requested stage
            (MMPretrain: the same GroupNorm(1)); None for none.
            Default: ``dict(type='GN', num_groups=1)``.
        act_cfg (dict): MLP activation. Default: ``dict(type='GELU')``.
        drop_rate (float): MLP dropout. Default: 0.
        drop_path_rate (float): stochastic depth, linear over all blocks
            from 0. Default: 0.
        frozen_stages (int): -1 nothing, 0 the patch embedding, N the patch
            embedding and stages 0..N-1 (downsampling, blocks, output norm).
            Default: -1.
        norm_eval (bool): keep BatchNorm layers in eval mode while training.
            RIFormer's own norms are GroupNorm (no running statistics), so
            this only matters with a BatchNorm ``norm_cfg``. Default: False.
        with_cp (bool): activation checkpointing per block. Default: False.
        deploy (bool): build the inference structure (token mixer folded
            into the first norm of every block). Default: False.
        init_cfg (dict | None): ``dict(type='Pretrained', checkpoint=PATH)``
            loads an MMPretrain or converted checkpoint, of the training or
            the deploy structure. Default: None (MMPretrain's ImageNet
            recipe: trunc-normal(0.02) convs and token mixer weights, zero
            biases, norms 1/0).
    """

    arch_settings = {
        's12': dict(
            layers=[2, 2, 6, 2],
            embed_dims=[64, 128, 320, 512],
            mlp_ratios=[4, 4, 4, 4],
            layer_scale_init_value=1e-5),
        's24': dict(
            layers=[4, 4, 12, 4],
            embed_dims=[64, 128, 320, 512],
            mlp_ratios=[4, 4, 4, 4],
            layer_scale_init_value=1e-5),
        's36': dict(
            layers=[6, 6, 18, 6],
            embed_dims=[64, 128, 320, 512],
            mlp_ratios=[4, 4, 4, 4],
            layer_scale_init_value=1e-6),
        'm36': dict(
            layers=[6, 6, 18, 6],
            embed_dims=[96, 192, 384, 768],
            mlp_ratios=[4, 4, 4, 4],
            layer_scale_init_value=1e-6),
        'm48': dict(
            layers=[8, 8, 24, 8],
            embed_dims=[96, 192, 384, 768],
            mlp_ratios=[4, 4, 4, 4],
            layer_scale_init_value=1e-6),
    }
    arch_keys = ('layers', 'embed_dims')
    arch_optional = dict(mlp_ratios=[4, 4, 4, 4], layer_scale_init_value=1e-5)

    def __init__(self,
                 arch: Union[str, dict] = 's12',
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 norm_cfg: dict = dict(type='GN', num_groups=1),
                 out_norm_cfg: Optional[dict] = dict(type='GN', num_groups=1),
                 act_cfg: dict = dict(type='GELU'),
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 deploy: bool = False,
                 init_cfg: Optional[dict] = None,
                 **kwargs):
        self.reject_unknown_kwargs(kwargs)
        super().__init__(init_cfg=init_cfg)
        arch = self.parse_arch(arch)
        self._check_arch(arch)
        self._check_norm_cfg(norm_cfg)
        self.arch = arch
        dpr = self.init_common(
            in_channels=in_channels,
            out_indices=out_indices,
            frozen_stages=frozen_stages,
            norm_eval=norm_eval,
            with_cp=with_cp,
            drop_path_rate=drop_path_rate,
            num_blocks=sum(arch['layers']),
            drop_rate=drop_rate)
        self.deploy = check_flag('RIFormer', 'deploy', deploy)
        embed_dims = list(arch['embed_dims'])
        self.embed_dims = embed_dims
        layers = arch['layers']

        self.stem = nn.Conv2d(
            in_channels, embed_dims[0], 7, stride=4, padding=2)
        self.stages = nn.ModuleList()
        for i in range(self.num_stages):
            start = sum(layers[:i])
            blocks = [
                RIFormerBlock(
                    embed_dims[i],
                    mlp_ratio=arch['mlp_ratios'][i],
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg,
                    drop=drop_rate,
                    drop_path=dpr[start + j],
                    layer_scale_init_value=arch['layer_scale_init_value'],
                    deploy=deploy) for j in range(layers[i])
            ]
            self.stages.append(
                RIFormerStage(embed_dims[i - 1] if i > 0 else None,
                              embed_dims[i], blocks, with_cp))

        self.build_out_norms(out_norm_cfg, embed_dims)

        self.apply(self._init_module)
        self._freeze_stages()

    def _check_arch(self, arch: dict) -> None:
        for key in ('layers', 'embed_dims', 'mlp_ratios'):
            value = arch[key]
            if not isinstance(value, (list, tuple)) or len(value) != 4:
                raise ValueError(
                    f'RIFormer: arch[{key!r}] must be a list of 4 entries '
                    f'(one per stage), got {value!r}')
        for key in ('layers', 'embed_dims'):
            check_numbers('RIFormer', f'arch[{key!r}]', arch[key],
                          integer=True, low=1)
        check_numbers('RIFormer', "arch['mlp_ratios']", arch['mlp_ratios'],
                      low=0, low_open=True)
        check_number('RIFormer', "arch['layer_scale_init_value']",
                     arch['layer_scale_init_value'], low=0)

    @staticmethod
    def _check_norm_cfg(norm_cfg: dict) -> None:
        probe = build_norm_layer(norm_cfg, 4)[1]
        weight = getattr(probe, 'weight', None)
        bias = getattr(probe, 'bias', None)
        if not (isinstance(weight, nn.Parameter)
                and isinstance(bias, nn.Parameter)
                and weight.shape == (4, ) and bias.shape == (4, )):
            raise ValueError(
                f'RIFormer: norm_cfg {norm_cfg!r} must build a norm with a '
                'per-channel affine weight and bias (e.g. GN, LN2d, BN with '
                'affine=True): the token mixer folds into it')

    @staticmethod
    def _init_module(m: nn.Module) -> None:
        """MMPretrain's recipe: trunc-normal(0.02) convs, norms 1/0.

        The token mixer counts as a (depthwise 1×1) conv, as in MMPretrain.
        """
        if isinstance(m, nn.Conv2d):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, AffineTokenMixer):
            trunc_normal_(m.weight, std=.02)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, (nn.GroupNorm, nn.LayerNorm)):
            if m.weight is not None:
                nn.init.constant_(m.weight, 1.0)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)

    def stage_modules(self, index: int) -> List[nn.Module]:
        if index < 0:
            return [self.stem]
        return [self.stages[index], getattr(self, f'norm{index}', None)]

    def switch_to_deploy(self) -> 'RIFormer':
        """Fold every block's token mixer into its norm (in place).

        The outputs are unchanged (up to float rounding); the token mixer
        parameters disappear. Idempotent. Returns ``self``.
        """
        for stage in self.stages:
            for block in stage.blocks:
                block.switch_to_deploy()
        self.deploy = True
        self._freeze_stages()
        return self

    def forward(self, x: Tensor) -> tuple:
        """(B, C, H, W) -> tuple of (B, C_i, H_i, W_i) per ``out_indices``."""
        self.check_input(x)
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(self.apply_out_norm(i, x))
        return tuple(outs)


# --------------------------------------------------------------------------
# MMPretrain checkpoint conversion
# --------------------------------------------------------------------------

#: parts of an MMPretrain ImageClassifier outside the backbone, dropped on
#: purpose (the classification neck / head)
RIFORMER_CLASSIFIER_PREFIXES = ('head.', 'neck.', 'data_preprocessor.')


def _half(index: str) -> int:
    """``network[2i]`` / ``norm{2i}`` belong to our stage ``i``."""
    return int(index) // 2


def _after_downsample(index: str) -> int:
    """``network[2i + 1]`` (downsampling) starts our stage ``i + 1``."""
    return (int(index) + 1) // 2


#: MMPretrain block ``network.{2i}.{j}.*`` sub-key -> ours
_RIFORMER_BLOCK_RENAMES = {
    'norm1.': 'norm1.',
    'norm2.': 'norm2.',
    'norm_reparam.': 'norm_reparam.',
    'mlp.fc1.': 'ffn.fc1.',
    'mlp.fc2.': 'ffn.fc2.',
}
_BLOCK = r'network\.([0246])\.(\d+)\.'
_OURS = 'stages.{0}.blocks.{1}.'
#: MMPretrain's layout (a backbone ``network`` of alternating block lists
#: and downsamplings; training or deploy structure). An arch dict with equal
#: widths of adjacent stages, where MMPretrain skips a downsampling and the
#: ``network`` indices shift, is not a layout this backbone has: KeyError.
RIFORMER_RULES = (
    drop_prefixes(RIFORMER_CLASSIFIER_PREFIXES),
    Rule(r'patch_embed\.proj\.(.*)', 'stem.{0}'),
    Rule(r'norm([0246])\.([^.]*)', 'norm{0}.{1}', groups={0: _half}),
    Rule(r'norm([135])\.[^.]*', DROP,
         note='dropped output norms after MMPretrain downsampling layers '
         '(no equivalent here)'),
    Rule(r'network\.([135])\.proj\.(.*)', 'stages.{0}.downsample.{1}',
         groups={0: _after_downsample}),
    Rule(_BLOCK + r'layer_scale_([12])', _OURS + 'gamma{2}',
         groups={0: _half}),
    Rule(_BLOCK + r'token_mixer\.affine\.weight', _OURS + 'token_mixer.weight',
         flat, groups={0: _half}),
    Rule(_BLOCK + r'token_mixer\.affine\.bias', _OURS + 'token_mixer.bias',
         groups={0: _half}),
    *rename_rules(_BLOCK, _OURS, _RIFORMER_BLOCK_RENAMES, {0: _half}),
)


def convert_riformer(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Convert an MMPretrain RIFormer checkpoint to :class:`RIFormer` layout.

    Accepts MMPretrain's ImageNet classifiers (``backbone.patch_embed``,
    ``backbone.network.{n}``, ``backbone.norm6``, ``head.fc``) and backbones
    with extra output norms (``norm0/2/4/6``), in the training structure
    (``norm1`` + ``token_mixer.affine``) or the deploy structure
    (``norm_reparam``), wrapped in ``state_dict`` / ``model`` or flat, with or
    without the ``backbone.`` prefix. A state dict already in mmvitmix layout
    is returned unchanged (minus the prefix).

    ``network[2i]`` (stage ``i``'s blocks) maps to ``stages.{i}.blocks``,
    ``network[2i + 1]`` (downsampling) to ``stages.{i + 1}.downsample`` and
    ``norm{2i}`` to ``norm{i}`` (:data:`RIFORMER_RULES`). Dropped on
    purpose: everything outside ``backbone.*`` when that prefix is present
    (the classifier's ``neck`` and ``head``, a detector's heads), the
    classifier keys of an unprefixed file (``head.*``, ``neck.*``) and output
    norms after MMPretrain's downsampling layers (``norm1/3/5``, with a
    warning), which this backbone does not expose. Any other key without a
    rule raises ``KeyError``.
    """
    state_dict = unwrap_state_dict(state_dict)
    if any(k.startswith('backbone.') for k in state_dict):
        # a whole model (classifier, detector, ...): keep its backbone
        state_dict = {
            k[len('backbone.'):]: v
            for k, v in state_dict.items() if k.startswith('backbone.')
        }
    return convert_state(
        state_dict,
        RIFORMER_RULES,
        'convert_riformer',
        already_converted=('stem.', 'stages.'))


RIFormer.converter = staticmethod(convert_riformer)
