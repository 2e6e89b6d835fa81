"""RMT: Retentive Networks Meet Vision Transformers (CVPR 2024).

Qihang Fan, Huaibo Huang, Mingrui Chen, Hongmin Liu, Ran He.
https://arxiv.org/abs/2309.11523 ::

    @inproceedings{fan2024rmt,
      title={RMT: Retentive Networks Meet Vision Transformers},
      author={Fan, Qihang and Huang, Huaibo and Chen, Mingrui and Liu, Hongmin
              and He, Ran},
      booktitle={CVPR}, year={2024}}

The architecture follows the official release (qhfan/RMT,
``classfication_release/RMT.py``): a four-conv stem, stages of retention
blocks (conditional position encoding, Manhattan Self-Attention with an
explicit spatial decay γ^distance plus a 5×5 depthwise LePE, and a conv FFN),
3×3/2 conv + BatchNorm downsampling between stages. Early stages decompose
the attention along W then H; late stages attend over all H·W tokens.

Official ImageNet checkpoints (``{'model': VisRetNet state_dict}``) are
converted by :func:`convert_rmt`, at load time or with
``tools/model_converters/rmt2mmvitmix.py``.
"""
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor

from mmvitmix.ops.backends import check_backend
from mmvitmix.ops.conv_ffn import conv_ffn_tail, fused_tail_usable
from mmvitmix.ops.norm_linear import norm_linears
from mmvitmix.ops.dwconv import depthwise_conv2d
from mmvitmix.ops.decay import RetentionDecay
from mmvitmix.ops.retention import retention_attention
from mmvitmix.registry import MODELS
from ..converters import (Rule, check_all_consumed, convert_state,
                          drop_prefixes, flat, rename_rules,
                          strip_prefix_if_all, unwrap_state_dict)
from .base import (VitMixBackbone, check_number, check_numbers, records_grad,
                   run_blocks)

# --------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------


def add_into(fresh: Tensor, other: Tensor) -> Tensor:
    """``fresh + other``, written into ``fresh`` where that is the same.

    ``fresh`` must be a branch's new output that no backward needs (a conv
    or linear output): the sum then takes no large temporary. Under
    autocast the dtypes may differ; then the out-of-place sum keeps the
    promoted dtype. Under autograd a ``fresh`` that is a view (a linear's
    4-D output, an unflattened conv output) is not written into: autograd
    would record the write as ``CopySlices`` and make four copies of the
    gradient in backward, where an out-of-place sum makes none.
    """
    if (fresh._base is not None and torch.is_grad_enabled()
            and (fresh.requires_grad or other.requires_grad)):
        return fresh + other
    if fresh.dtype == torch.promote_types(fresh.dtype, other.dtype):
        return fresh.add_(other)
    return fresh + other


class DWConv2d(nn.Module):
    """Depthwise conv on a channels-last (B, H, W, C) tensor."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(
            channels,
            channels,
            kernel_size,
            padding=kernel_size // 2,
            groups=channels)

    def forward(self, x: Tensor, plus_input: bool = False) -> Tensor:
        """``dwconv(x)``, or ``x + dwconv(x)`` with ``plus_input``.

        ``x + dwconv(x)`` is the depthwise conv whose filters have 1 added
        at their centre: one pass over the tensor instead of two (the sum
        rounds as ``x·(w+1)`` instead of ``x·w + x``).
        """
        weight = self.conv.weight
        if plus_input:
            centre = self.conv.kernel_size[0] // 2
            delta = torch.zeros_like(weight)
            delta[:, :, centre, centre] = 1
            weight = weight + delta
        out = depthwise_conv2d(
            x.permute(0, 3, 1, 2), weight, self.conv.bias, self.conv.padding)
        return out.permute(0, 2, 3, 1)


class RetentionRelPos(nn.Module):
    """Rotary angles and per-head spatial decay of one stage.

    ``log_decay[h] = log(1 - 2 ** (-initial_value - heads_range * h / heads))``
    (official ``RetNetRelPos2d``). Both tables are persistent buffers so an
    official checkpoint's values are loaded, as the official code does.
    """

    def __init__(self, embed_dims: int, num_heads: int, initial_value: float,
                 heads_range: float):
        super().__init__()
        key_dim = embed_dims // num_heads
        angle = 1.0 / (10000**torch.linspace(0, 1, key_dim // 2))
        angle = angle.unsqueeze(-1).repeat(1, 2).flatten()
        log_decay = torch.log(1 - 2**(
            -initial_value -
            heads_range * torch.arange(num_heads, dtype=torch.float) /
            num_heads))
        self.register_buffer('angle', angle)
        self.register_buffer('log_decay', log_decay)

    def forward(self, height: int, width: int, dtype: torch.dtype):
        """sin/cos tables (H, W, Dk) over the row-major token index."""
        index = torch.arange(height * width).to(self.angle)
        phase = index[:, None] * self.angle[None, :]
        sin = torch.sin(phase).reshape(height, width, -1).to(dtype)
        cos = torch.cos(phase).reshape(height, width, -1).to(dtype)
        return sin, cos


class RetentionAttention(nn.Module):
    """Manhattan Self-Attention with LePE (decomposed or whole)."""

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 decomposed: bool,
                 attn_backend: str = 'auto'):
        super().__init__()
        self.num_heads = num_heads
        self.decomposed = decomposed
        self.attn_backend = attn_backend
        self.key_dim = embed_dims // num_heads
        self.scaling = self.key_dim**-0.5
        self.q_proj = nn.Linear(embed_dims, embed_dims)
        self.k_proj = nn.Linear(embed_dims, embed_dims)
        self.v_proj = nn.Linear(embed_dims, embed_dims)
        self.lepe = DWConv2d(embed_dims, 5)
        self.out_proj = nn.Linear(embed_dims, embed_dims)

    def forward(self,
                x: Tensor,
                sin: Tensor,
                cos: Tensor,
                log_decay: RetentionDecay,
                norm: Optional[nn.Module] = None) -> Tensor:
        """``x`` is the block's input when ``norm`` (the block's pre-norm)
        is given: in training the normalised tensor is then recomputed in
        backward instead of kept (:func:`~mmvitmix.ops.norm_linear.
        norm_linears`)."""
        bsz, height, width, _ = x.shape
        # three linears, not one on concatenated weights: q, k and v then
        # each own dense memory, which the rotary, the LePE conv and the
        # attention read fastest (docs/benchmarks.md)
        projections = (self.q_proj, self.k_proj, self.v_proj)
        if norm is not None:
            q, k, v = norm_linears(x, norm, projections)
        else:
            q, k, v = (proj(x) for proj in projections)
        lepe = self.lepe(v)
        # (B, H, W, C) -> (B, heads, H, W, D), views; explicit sizes, not
        # -1, so that a batch of 0 images reshapes too
        shape = (bsz, height, width, self.num_heads, self.key_dim)
        q = q.view(shape).permute(0, 3, 1, 2, 4)
        k = k.view(shape).permute(0, 3, 1, 2, 4)
        v = v.view(shape).permute(0, 3, 1, 2, 4)
        # the seam scales k, rotates q and k (official: k * scaling, then
        # theta_shift of both) and runs the retention
        out = retention_attention(
            q, k, v, log_decay, self.decomposed, sin=sin, cos=cos,
            scale=self.scaling, backend=self.attn_backend,
            overwrite_qk=True)
        out = out.permute(0, 2, 3, 1, 4)  # (B, H, W, heads, D)
        # into the conv's output (the fused op keeps `out` for its backward),
        # read in whatever layout the attention left it: flattening the
        # heads first would copy the H pass's column-major output
        lepe = add_into(lepe.unflatten(-1, (self.num_heads, -1)), out)
        return self.out_proj(lepe.flatten(-2))


class ConvFFN(nn.Module):
    """fc1 -> GELU -> (x + DWConv3x3(x)) -> fc2, channels-last."""

    def __init__(self, embed_dims: int, hidden_dims: int):
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.dwconv = DWConv2d(hidden_dims, 3)
        self.fc2 = nn.Linear(hidden_dims, embed_dims)

    def forward(self, x: Tensor, norm: Optional[nn.Module] = None) -> Tensor:
        """``x`` is the block's input when ``norm`` (the block's pre-norm)
        is given (see :class:`RetentionAttention`)."""
        x = norm_linears(x, norm, (self.fc1, ))[0] if norm else self.fc1(x)
        conv = self.dwconv.conv
        params = (conv.weight, conv.bias, self.fc2.weight, self.fc2.bias)
        if fused_tail_usable(x, *params):
            # training: only fc1's output kept for backward (GELU and the
            # conv recomputed there), not three hidden-size tensors
            return conv_ffn_tail(x, *params)
        if torch.is_grad_enabled() and x.requires_grad:
            x = F.gelu(x)
        else:  # nothing records fc1's output: no second hidden-size tensor
            x = torch.ops.aten.gelu_(x)
        return self.fc2(self.dwconv(x, plus_input=True))  # x + dwconv(x)


class RetBlock(nn.Module):
    """CPE -> x + attn(norm1(x)) -> x + ffn(norm2(x)), optional layer scale."""

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 ffn_dims: int,
                 decomposed: bool,
                 drop_path: float = 0.,
                 layerscale: bool = False,
                 layer_init_value: float = 1e-6,
                 attn_backend: str = 'auto'):
        super().__init__()
        ln = dict(type='LN', eps=1e-6)
        self.cpe = DWConv2d(embed_dims, 3)
        self.norm1 = build_norm_layer(ln, embed_dims)[1]
        self.attn = RetentionAttention(embed_dims, num_heads, decomposed,
                                       attn_backend)
        self.norm2 = build_norm_layer(ln, embed_dims)[1]
        self.ffn = ConvFFN(embed_dims, ffn_dims)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layerscale = layerscale
        if layerscale:
            self.gamma1 = nn.Parameter(layer_init_value * torch.ones(embed_dims))
            self.gamma2 = nn.Parameter(layer_init_value * torch.ones(embed_dims))

    def forward(self, x: Tensor, sin: Tensor, cos: Tensor,
                log_decay: RetentionDecay) -> Tensor:
        # residual sums go into the branch's fresh output (see add_into)
        x = self.cpe(x, plus_input=True)  # x + cpe(x)
        # the pre-norms are handed over, not applied here: in training the
        # normalised tensors are recomputed in backward, not kept
        y = self.attn(x, sin, cos, log_decay, norm=self.norm1)
        if self.layerscale:
            y = self.gamma1 * y
        x = add_into(self.drop_path(y), x)
        y = self.ffn(x, norm=self.norm2)
        if self.layerscale:
            y = self.gamma2 * y
        return add_into(self.drop_path(y), x)


class Downsample(nn.Module):
    """3×3 stride-2 conv + norm between stages (channels-last in and out)."""

    def __init__(self, in_dims: int, out_dims: int, norm_cfg: dict):
        super().__init__()
        self.conv = nn.Conv2d(in_dims, out_dims, 3, 2, 1)
        self.norm = build_norm_layer(norm_cfg, out_dims)[1]

    def forward(self, x: Tensor) -> Tensor:
        # inference: the conv and norm take the channels-last memory as it
        # is; training: NCHW (faster backward; see RMT.forward)
        x = x.permute(0, 3, 1, 2)
        if records_grad(self):
            x = x.contiguous()
        x = self.norm(self.conv(x))
        # channels-last *memory*: the stage's linears and norms then read
        # it in place (an NCHW-strided view would be copied by every one)
        return x.permute(0, 2, 3, 1).contiguous()


class RMTStage(nn.Module):
    """Optional downsampling, the stage's decay tables and its blocks."""

    def __init__(self,
                 in_dims: Optional[int],
                 embed_dims: int,
                 depth: int,
                 num_heads: int,
                 init_value: float,
                 heads_range: float,
                 ffn_dims: int,
                 decomposed: bool,
                 drop_paths: Sequence[float],
                 layerscale: bool,
                 layer_init_value: float,
                 norm_cfg: dict,
                 with_cp: bool = False,
                 attn_backend: str = 'auto'):
        super().__init__()
        self.downsample = (
            Downsample(in_dims, embed_dims, norm_cfg)
            if in_dims is not None else None)
        self.rel_pos = RetentionRelPos(embed_dims, num_heads, init_value,
                                       heads_range)
        self.blocks = nn.ModuleList([
            RetBlock(embed_dims, num_heads, ffn_dims, decomposed,
                     drop_paths[i], layerscale, layer_init_value,
                     attn_backend)
            for i in range(depth)
        ])
        self.with_cp = with_cp

    def forward(self, x: Tensor) -> Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        _, height, width, _ = x.shape
        sin, cos = self.rel_pos(height, width, x.dtype)
        # one decay for all the stage's blocks: its masks are made once
        decay = RetentionDecay(self.rel_pos.log_decay)
        return run_blocks(
            self.blocks, x, sin, cos, decay, with_cp=self.with_cp)


# --------------------------------------------------------------------------
# the backbone
# --------------------------------------------------------------------------


@MODELS.register_module()
class RMT(VitMixBackbone):
    """RMT backbone for detection, segmentation and classification.

    Args:
        arch (str | dict): ``'t'``, ``'s'``, ``'b'``, ``'l'`` (official
            RMT_T3, RMT_S, RMT_M2, RMT_L6) or a dict with the official
            constructor's names: ``embed_dims, depths, num_heads,
            init_values, heads_ranges, mlp_ratios, chunkwise_recurrents``
            (required) and ``layerscales, layer_init_values`` (optional,
            default no layer scale, 1e-6). Default: ``'t'``.
        in_channels (int): input channels. Default: 3.
        out_indices (int | Sequence[int]): stages whose outputs are returned
            (NCHW, strides 4/8/16/32). Default: (0, 1, 2, 3).
        drop_path_rate (float): stochastic depth, linear over all blocks.
            Default: 0.1.
        norm_cfg (dict): norm of the stem and downsampling layers (official:
            BatchNorm; use ``dict(type='SyncBN')`` for multi-GPU training).
            Default: ``dict(type='BN')``.
        out_norm_cfg (dict | None): output norm added per requested stage
            (official detection backbone: LayerNorm, eps 1e-5); None for
            none. Default: ``dict(type='LN')``.
        frozen_stages (int): -1 nothing, 0 the stem, N the stem and stages
            0..N-1. Default: -1.
        norm_eval (bool): keep BatchNorm layers in eval mode while training.
            Default: False.
        with_cp (bool): activation checkpointing per block. Default: False.
        attn_backend (str): implementation of the retention core:
            ``'auto'`` (the measured fastest for the device, see
            docs/benchmarks.md; ``MMVITMIX_ATTN_BACKEND`` overrides it),
            ``'sdpa'``, ``'flex'``, ``'fused'`` (CUDA tensors only) or
            ``'reference'`` (:mod:`mmvitmix.ops.backends`). All compute the
            same function.
            Default: ``'auto'``.
        init_cfg (dict | None): ``dict(type='Pretrained', checkpoint=PATH)``
            loads an official or converted checkpoint. Default: None.
    """

    arch_settings = {
        't': dict(
            embed_dims=[64, 128, 256, 512],
            depths=[2, 2, 8, 2],
            num_heads=[4, 4, 8, 16],
            init_values=[2, 2, 2, 2],
            heads_ranges=[4, 4, 6, 6],
            mlp_ratios=[3, 3, 3, 3],
            chunkwise_recurrents=[True, True, False, False],
            layerscales=[False, False, False, False],
            layer_init_values=1e-6),
        's': dict(
            embed_dims=[64, 128, 256, 512],
            depths=[3, 4, 18, 4],
            num_heads=[4, 4, 8, 16],
            init_values=[2, 2, 2, 2],
            heads_ranges=[4, 4, 6, 6],
            mlp_ratios=[4, 4, 3, 3],
            chunkwise_recurrents=[True, True, True, False],
            layerscales=[False, False, False, False],
            layer_init_values=1e-6),
        'b': dict(
            embed_dims=[80, 160, 320, 512],
            depths=[4, 8, 25, 8],
            num_heads=[5, 5, 10, 16],
            init_values=[2, 2, 2, 2],
            heads_ranges=[5, 5, 6, 6],
            mlp_ratios=[4, 4, 3, 3],
            chunkwise_recurrents=[True, True, True, False],
            layerscales=[False, False, True, True],
            layer_init_values=1e-6),
        'l': dict(
            embed_dims=[112, 224, 448, 640],
            depths=[4, 8, 25, 8],
            num_heads=[7, 7, 14, 20],
            init_values=[2, 2, 2, 2],
            heads_ranges=[6, 6, 6, 6],
            mlp_ratios=[4, 4, 3, 3],
            chunkwise_recurrents=[True, True, True, False],
            layerscales=[False, False, True, True],
            layer_init_values=1e-6),
    }
    arch_keys = ('embed_dims', 'depths', 'num_heads', 'init_values',
                 'heads_ranges', 'mlp_ratios', 'chunkwise_recurrents')
    arch_optional = dict(
        layerscales=[False, False, False, False], layer_init_values=1e-6)

    def __init__(self,
                 arch: Union[str, dict] = 't',
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
        self.attn_backend = check_backend(attn_backend, 'RMT: attn_backend')
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

        # stem: (conv3x3/2, BN, GELU, conv3x3, BN, GELU) then
        # (conv3x3/2, BN, GELU, conv3x3, BN): stride 4
        half = embed_dims[0] // 2
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, half, 3, 2, 1),
            build_norm_layer(norm_cfg, half)[1], nn.GELU(),
            nn.Conv2d(half, half, 3, 1, 1),
            build_norm_layer(norm_cfg, half)[1], nn.GELU(),
            nn.Conv2d(half, embed_dims[0], 3, 2, 1),
            build_norm_layer(norm_cfg, embed_dims[0])[1], nn.GELU(),
            nn.Conv2d(embed_dims[0], embed_dims[0], 3, 1, 1),
            build_norm_layer(norm_cfg, embed_dims[0])[1])

        depths = arch['depths']
        self.stages = nn.ModuleList()
        for i in range(self.num_stages):
            self.stages.append(
                RMTStage(
                    in_dims=embed_dims[i - 1] if i > 0 else None,
                    embed_dims=embed_dims[i],
                    depth=depths[i],
                    num_heads=arch['num_heads'][i],
                    init_value=arch['init_values'][i],
                    heads_range=arch['heads_ranges'][i],
                    ffn_dims=int(arch['mlp_ratios'][i] * embed_dims[i]),
                    decomposed=bool(arch['chunkwise_recurrents'][i]),
                    drop_paths=dpr[sum(depths[:i]):sum(depths[:i + 1])],
                    layerscale=bool(arch['layerscales'][i]),
                    layer_init_value=arch['layer_init_values'],
                    norm_cfg=norm_cfg,
                    with_cp=with_cp,
                    attn_backend=attn_backend))

        self.build_out_norms(out_norm_cfg, embed_dims)
        self.apply(self._init_module)
        self._freeze_stages()

    def _check_arch(self, arch: dict) -> None:
        for key in ('embed_dims', 'depths', 'num_heads', 'init_values',
                    'heads_ranges', 'mlp_ratios', 'chunkwise_recurrents',
                    'layerscales'):
            if not isinstance(arch[key], (list, tuple)) or len(
                    arch[key]) != self.num_stages:
                raise ValueError(
                    f'RMT: arch[{key!r}] must be a list of {self.num_stages} '
                    f'entries, got {arch[key]!r}')
        for key in ('embed_dims', 'depths', 'num_heads'):
            check_numbers('RMT', f'arch[{key!r}]', arch[key], integer=True,
                          low=1)
        # log(1 - 2 ** -(init_value + range * h / heads)) needs a positive
        # exponent for head 0
        check_numbers('RMT', "arch['init_values']", arch['init_values'],
                      low=0, low_open=True)
        check_numbers('RMT', "arch['heads_ranges']", arch['heads_ranges'],
                      low=0)
        check_numbers('RMT', "arch['mlp_ratios']", arch['mlp_ratios'], low=0,
                      low_open=True)
        check_number('RMT', "arch['layer_init_values']",
                     arch['layer_init_values'], low=0)
        for dims, heads in zip(arch['embed_dims'], arch['num_heads']):
            if dims % heads or (dims // heads) % 2:
                raise ValueError(
                    f'RMT: embed_dims {dims} must split into {heads} heads '
                    'of an even head dim (rotary pairs)')

    @staticmethod
    def _init_module(m: nn.Module) -> None:
        """Official init: trunc-normal(0.02) Linear, LayerNorm 1/0."""
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.weight, 1.0)
            nn.init.constant_(m.bias, 0)

    def stage_modules(self, index: int) -> List[nn.Module]:
        if index < 0:
            return [self.stem]
        return [self.stages[index], getattr(self, f'norm{index}', None)]

    def forward(self, x: Tensor) -> tuple:
        """(B, C, H, W) -> tuple of (B, C_i, H_i, W_i) per ``out_indices``."""
        self.check_input(x)
        # inference: the stem runs channels-last (oneDNN's forward
        # convolutions take NHWC memory as it is, faster); training: NCHW,
        # whose backward is faster on CPU (figures: docs/benchmarks.md). The
        # stages need channels-last memory either way (see Downsample).
        if not records_grad(self.stem):
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x).permute(0, 2, 3, 1).contiguous()
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                out = self.apply_out_norm(i, x, channels_last=True)
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return tuple(outs)


# --------------------------------------------------------------------------
# official checkpoint conversion
# --------------------------------------------------------------------------

#: classification-only parts of VisRetNet, dropped on purpose: the final
#: projection, norm and head, and the token-labeling releases' (RMT-S*/B*/L*,
#: ``classification_token_label_release``) per-token auxiliary head
RMT_CLASSIFIER_PREFIXES = ('proj.', 'norm.', 'head.', 'aux_head.')


def _next_stage(index: str) -> int:
    """Official ``layers.{i}.downsample`` ends stage i; ours starts i + 1."""
    return int(index) + 1


#: official block ``layers.{i}.blocks.{j}.*`` sub-key -> ours
_RMT_BLOCK_RENAMES = {
    'retention_layer_norm.': 'norm1.',
    'final_layer_norm.': 'norm2.',
    'retention.q_proj.': 'attn.q_proj.',
    'retention.k_proj.': 'attn.k_proj.',
    'retention.v_proj.': 'attn.v_proj.',
    'retention.out_proj.': 'attn.out_proj.',
    'retention.lepe.conv.': 'attn.lepe.conv.',
    'ffn.fc1.': 'ffn.fc1.',
    'ffn.fc2.': 'ffn.fc2.',
    'ffn.dwconv.conv.': 'ffn.dwconv.conv.',
    'pos.conv.': 'cpe.conv.',
}
_BLOCK = r'layers\.(\d+)\.blocks\.([^.]+)\.'
#: the official layouts (VisRetNet; the detection backbone adds extra_norms)
RMT_RULES = (
    drop_prefixes(RMT_CLASSIFIER_PREFIXES),
    Rule(r'patch_embed\.proj\.(.*)', 'stem.{0}'),
    Rule(r'extra_norms\.(\d+)\.(.+)', 'norm{0}.{1}'),
    Rule(r'layers\.(\d+)\.Relpos\.angle', 'stages.{0}.rel_pos.angle'),
    Rule(r'layers\.(\d+)\.Relpos\.decay', 'stages.{0}.rel_pos.log_decay'),
    Rule(r'layers\.(\d+)\.downsample\.reduction\.(.*)',
         'stages.{0}.downsample.conv.{1}', groups={0: _next_stage}),
    Rule(r'layers\.(\d+)\.downsample\.norm\.(.*)',
         'stages.{0}.downsample.norm.{1}', groups={0: _next_stage}),
    # (C, ) in the official layer-scale releases; flattened either way
    Rule(_BLOCK + r'gamma_([12])', 'stages.{0}.blocks.{1}.gamma{2}',
         transform=flat),
    *rename_rules(_BLOCK, 'stages.{0}.blocks.{1}.', _RMT_BLOCK_RENAMES),
)


def convert_rmt(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Convert an official RMT checkpoint to the :class:`RMT` layout.

    Accepts the ImageNet releases (``VisRetNet``: ``patch_embed.proj.*``,
    ``layers.{i}.*``, classifier ``proj/norm/head``; the token-labeling
    releases RMT-S*/B*/L* add a per-token ``aux_head``) or the official
    detection / segmentation backbone (``RMT``: the same plus
    ``extra_norms.{i}``), wrapped or not, with or without a ``backbone.``
    prefix. A state dict already in mmvitmix layout is returned unchanged.
    The classifier (``proj.*``, ``norm.*``, ``head.*``, ``aux_head.*``) is
    dropped; every other key must match a rule of :data:`RMT_RULES`, else
    ``KeyError``.
    """
    state_dict = strip_prefix_if_all(unwrap_state_dict(state_dict),
                                     'backbone.')
    return convert_state(
        state_dict,
        RMT_RULES,
        'convert_rmt',
        already_converted=('stem.', 'stages.'))


#: top-level modules of the authors' trained detectors (mmdet 2.x) and
#: segmentors (mmseg 0.x); their keys are the same in mmdet 3.x / mmseg 1.x
DOWNSTREAM_PREFIXES = ('neck.', 'rpn_head.', 'roi_head.', 'bbox_head.',
                       'mask_head.', 'decode_head.', 'auxiliary_head.')


def is_whole_model(state_dict: Dict[str, Tensor]) -> bool:
    """True for a whole detector / segmentor state dict (``backbone.*``
    plus neck / head keys), as the authors' downstream releases are."""
    state_dict = unwrap_state_dict(state_dict)
    return (any(k.startswith('backbone.') for k in state_dict)
            and any(k.startswith(DOWNSTREAM_PREFIXES) for k in state_dict))


def convert_rmt_whole_model(
        state_dict: Dict[str, Tensor],
        out_indices: Optional[Sequence[int]] = None) -> Dict[str, Tensor]:
    """Convert the authors' trained detector / segmentor checkpoint.

    qhfan/RMT's ``detect/`` (mmdet 2.x: Mask R-CNN, Cascade Mask R-CNN,
    RetinaNet) and ``segmentation/`` (mmseg 0.x: Semantic FPN, UperNet)
    files hold ``backbone.*`` in the official detection-backbone layout
    (with ``extra_norms.{i}`` for all four stages) and neck / head keys
    whose names mmdet 3.x and mmseg 1.x kept. The backbone part goes
    through :func:`convert_rmt` (``extra_norms.{i}`` -> ``norm{i}``); the
    rest is kept as it is. ``out_indices``: the stages the target config's
    backbone returns; the output norms of the others (e.g. stage 0 of our
    RetinaNet configs, which read stages 1-3) have no place in that model
    and are dropped. Non-backbone keys outside :data:`DOWNSTREAM_PREFIXES`
    are an error (``KeyError``), so nothing is lost silently.
    """
    state_dict = unwrap_state_dict(state_dict)
    backbone = {
        k[len('backbone.'):]: v
        for k, v in state_dict.items() if k.startswith('backbone.')
    }
    others = {k: v for k, v in state_dict.items()
              if not k.startswith('backbone.')}
    unknown = [k for k in others if not k.startswith(DOWNSTREAM_PREFIXES)]
    check_all_consumed('convert_rmt_whole_model', unknown)
    converted = convert_rmt(backbone)
    if out_indices is not None:
        keep = {f'norm{i}.' for i in out_indices}
        converted = {
            k: v
            for k, v in converted.items()
            if not (k.startswith('norm') and k.split('.')[0][4:].isdigit()
                    and k.split('.')[0] + '.' not in keep)
        }
    out = {'backbone.' + k: v for k, v in converted.items()}
    out.update(others)
    return out


RMT.converter = staticmethod(convert_rmt)
