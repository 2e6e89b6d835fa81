r"""Whole detector / segmentor checkpoints of the authors' downstream code
converted into mmdet 3.x / mmseg 1.x models built from our configs.

Two layouts, told apart by their keys (:func:`whole_model_layout`):

``detectron2``
    ``backbone.bottom_up.*`` (the official detection backbone),
    ``backbone.fpn_lateral{l}`` / ``backbone.fpn_output{l}`` (FPN, ``l`` =
    log2 of the stride), ``backbone.top_block.p6/p7`` (RetinaNet),
    ``proposal_generator.rpn_head.*``, ``roi_heads.box_head.fc{1,2}``,
    ``roi_heads.box_predictor.{cls_score,bbox_pred}``,
    ``roi_heads.mask_head.{mask_fcn1-4,deconv,predictor}``, RetinaNet's
    ``head.{cls,bbox}_subnet.{0,2,4,6}`` and ``head.{cls_score,bbox_pred}``.
    Mapped onto mmdet's ``FPN``, ``RPNHead``, ``Shared2FCBBoxHead``,
    ``FCNMaskHead`` and ``RetinaHead`` (:data:`DETECTRON2_RULES`). Both
    libraries put the background class last and order the RPN's 3 anchors
    by aspect ratio; RetinaNet's 9 anchors per location are ordered size
    major in detectron2 and ratio major in mmdet, so the classification
    and regression outputs of RetinaNet are permuted
    (:func:`retinanet_anchor_permutation`).
``mmseg0``
    ``backbone.*`` plus ``decode_head.*`` / ``auxiliary_head.*``, whose
    names mmseg 1.x kept (UPerHead, FCNHead): only the backbone is
    converted.

The backbone part goes through the backbone's own converter; the output
norms of stages the target config's backbone does not return
(``out_indices``) have no place in that model and are dropped. A key that no
rule covers is an error, so nothing is lost silently.
"""
import re
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ..converters import (Rule, check_all_consumed, convert_state,
                          unwrap_state_dict)

#: RetinaNet anchors per location: 3 octave scales x 3 aspect ratios
RETINANET_SCALES = 3
RETINANET_RATIOS = 3


def whole_model_layout(state_dict: Dict[str, Tensor]) -> Optional[str]:
    """``'detectron2'``, ``'mmseg0'`` or None (not a whole model)."""
    keys = list(unwrap_state_dict(state_dict))
    if any(k.startswith('backbone.bottom_up.') for k in keys) and any(
            k.startswith(('backbone.fpn_', 'proposal_generator.',
                          'roi_heads.', 'head.')) for k in keys):
        return 'detectron2'
    if any(k.startswith('backbone.') for k in keys) and any(
            k.startswith(('decode_head.', 'auxiliary_head.'))
            for k in keys):
        return 'mmseg0'
    return None


def retinanet_anchor_permutation(channels: int,
                                 per_anchor: int) -> torch.Tensor:
    """Output-channel order that turns detectron2's RetinaNet head outputs
    (anchor ``s * 3 + r``: size major) into mmdet's (``r * 3 + s``: ratio
    major); ``per_anchor`` channels per anchor (classes, or 4 deltas)."""
    anchors = RETINANET_SCALES * RETINANET_RATIOS
    if channels != anchors * per_anchor:
        raise ValueError(
            f'a RetinaNet head output of {channels} channels is not '
            f'{anchors} anchors x {per_anchor}')
    order = []
    for ratio in range(RETINANET_RATIOS):  # mmdet's anchor r * 3 + s
        for scale in range(RETINANET_SCALES):
            d2_anchor = scale * RETINANET_RATIOS + ratio
            order.extend(range(d2_anchor * per_anchor,
                               (d2_anchor + 1) * per_anchor))
    return torch.tensor(order)


def _permuted(per_anchor: Optional[int]) -> Callable[[Tensor], Tensor]:
    """``tensor -> tensor`` reordering dim 0 (RetinaNet outputs); with
    ``per_anchor`` None the number of classes is inferred (9 anchors)."""

    def transform(value: Tensor) -> Tensor:
        anchors = RETINANET_SCALES * RETINANET_RATIOS
        step = per_anchor or value.shape[0] // anchors
        return value[retinanet_anchor_permutation(value.shape[0], step)]

    return transform


#: detectron2 Mask R-CNN / Faster R-CNN / RetinaNet (non-backbone keys);
#: ``{fpn}`` is filled with the FPN level index by :func:`convert_detectron2`
DETECTRON2_RULES = (
    Rule(r'proposal_generator\.rpn_head\.conv\.(.*)', 'rpn_head.rpn_conv.{0}'),
    Rule(r'proposal_generator\.rpn_head\.objectness_logits\.(.*)',
         'rpn_head.rpn_cls.{0}'),
    Rule(r'proposal_generator\.rpn_head\.anchor_deltas\.(.*)',
         'rpn_head.rpn_reg.{0}'),
    Rule(r'roi_heads\.box_head\.fc([12])\.(.*)',
         'roi_head.bbox_head.shared_fcs.{0}.{1}',
         groups={0: lambda k: int(k) - 1}),
    Rule(r'roi_heads\.box_predictor\.cls_score\.(.*)',
         'roi_head.bbox_head.fc_cls.{0}'),
    Rule(r'roi_heads\.box_predictor\.bbox_pred\.(.*)',
         'roi_head.bbox_head.fc_reg.{0}'),
    Rule(r'roi_heads\.mask_head\.mask_fcn([1-4])\.(.*)',
         'roi_head.mask_head.convs.{0}.conv.{1}',
         groups={0: lambda k: int(k) - 1}),
    Rule(r'roi_heads\.mask_head\.deconv\.(.*)',
         'roi_head.mask_head.upsample.{0}'),
    Rule(r'roi_heads\.mask_head\.predictor\.(.*)',
         'roi_head.mask_head.conv_logits.{0}'),
    Rule(r'head\.cls_subnet\.([0246])\.(.*)',
         'bbox_head.cls_convs.{0}.conv.{1}',
         groups={0: lambda k: int(k) // 2}),
    Rule(r'head\.bbox_subnet\.([0246])\.(.*)',
         'bbox_head.reg_convs.{0}.conv.{1}',
         groups={0: lambda k: int(k) // 2}),
    Rule(r'head\.cls_score\.(.*)', 'bbox_head.retina_cls.{0}',
         transform=_permuted(None)),
    Rule(r'head\.bbox_pred\.(.*)', 'bbox_head.retina_reg.{0}',
         transform=_permuted(4)),
)

_FPN = re.compile(r'backbone\.fpn_(lateral|output)(\d)\.(.*)')
_TOP = re.compile(r'backbone\.top_block\.p([67])\.(.*)')


def _fpn_keys(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """detectron2 FPN keys -> mmdet ``neck.*`` (levels in stride order; the
    RetinaNet P6 / P7 convs follow as mmdet's extra ``fpn_convs``)."""
    levels = sorted({int(m.group(2)) for m in map(_FPN.fullmatch, state)
                     if m is not None})
    out = {}
    for key, value in state.items():
        match = _FPN.fullmatch(key)
        if match is not None:
            kind = 'lateral_convs' if match.group(1) == 'lateral' else (
                'fpn_convs')
            index = levels.index(int(match.group(2)))
            out[f'neck.{kind}.{index}.conv.{match.group(3)}'] = value
            continue
        match = _TOP.fullmatch(key)
        if match is not None:
            index = len(levels) + int(match.group(1)) - 6
            out[f'neck.fpn_convs.{index}.conv.{match.group(2)}'] = value
    return out


def _keep_out_norms(converted: Dict[str, Tensor],
                    out_indices: Optional[Sequence[int]]) -> Dict[str, Tensor]:
    """Drop the output norms ``norm{i}.*`` of stages not in ``out_indices``
    (None keeps all)."""
    if out_indices is None:
        return converted
    keep = {f'norm{i}' for i in out_indices}
    return {
        k: v
        for k, v in converted.items()
        if not (re.fullmatch(r'norm\d+', k.split('.')[0])
                and k.split('.')[0] not in keep)
    }


def convert_whole_model(
        state_dict: Dict[str, Tensor],
        convert_backbone: Callable[[Dict[str, Tensor]], Dict[str, Tensor]],
        out_indices: Optional[Sequence[int]] = None,
        name: str = 'convert_whole_model') -> Dict[str, Tensor]:
    """Convert a whole detectron2 detector or mmseg 0.x segmentor file.

    Args:
        state_dict: the checkpoint (wrapped in ``model`` / ``state_dict`` or
            not).
        convert_backbone: the backbone's official-checkpoint converter.
        out_indices: the stages the target config's backbone returns; the
            output norms of the others are dropped. None keeps all.
        name: for error messages.

    Returns:
        dict: ``backbone.*`` in mmvitmix layout, ``neck.*`` / ``rpn_head.*``
        / ``roi_head.*`` / ``bbox_head.*`` in mmdet 3.x layout (detectron2),
        or ``decode_head.*`` / ``auxiliary_head.*`` unchanged (mmseg 0.x).

    Raises:
        ValueError: not a whole detectron2 / mmseg 0.x model.
        KeyError: keys that no rule covers.
    """
    state_dict = unwrap_state_dict(state_dict)
    layout = whole_model_layout(state_dict)
    if layout is None:
        raise ValueError(
            f'{name}: not a whole detectron2 detector (backbone.bottom_up.* '
            'with fpn / proposal_generator / roi_heads / head keys) nor an '
            'mmseg 0.x segmentor (backbone.* with decode_head.*)')
    if layout == 'mmseg0':
        backbone = {
            k[len('backbone.'):]: v
            for k, v in state_dict.items() if k.startswith('backbone.')
        }
        others = {
            k: v
            for k, v in state_dict.items() if not k.startswith('backbone.')
        }
        check_all_consumed(name, [
            k for k in others
            if not k.startswith(('decode_head.', 'auxiliary_head.'))
        ])
    else:
        prefix = 'backbone.bottom_up.'
        backbone = {
            k[len(prefix):]: v
            for k, v in state_dict.items() if k.startswith(prefix)
        }
        rest = {
            k: v
            for k, v in state_dict.items() if not k.startswith(prefix)
        }
        neck = _fpn_keys(rest)
        heads = {
            k: v
            for k, v in rest.items()
            if not (_FPN.fullmatch(k) or _TOP.fullmatch(k))
        }
        others = dict(neck)
        others.update(convert_state(heads, DETECTRON2_RULES, name))
    converted = _keep_out_norms(convert_backbone(backbone), out_indices)
    out = {'backbone.' + k: v for k, v in converted.items()}
    out.update(others)
    return out


def check_against_model(model: torch.nn.Module,
                        converted: Dict[str, Tensor]) -> List[str]:
    """Problems (missing / unexpected keys, shape mismatches) of loading
    ``converted`` into ``model``; empty when it fits exactly."""
    ours = model.state_dict()
    problems = []
    missing = sorted(set(ours) - set(converted))
    unexpected = sorted(set(converted) - set(ours))
    shapes = sorted(k for k in set(ours) & set(converted)
                    if tuple(ours[k].shape) != tuple(converted[k].shape))
    for what, keys in (('missing', missing), ('unexpected', unexpected),
                       ('with another shape', shapes)):
        if keys:
            problems.append(f'{len(keys)} keys {what} (first: '
                            f'{", ".join(keys[:5])})')
    return problems
