"""RIFormer's learning paradigm as an MMPretrain classifier.

RIFormer (Wang et al., CVPR 2023, https://arxiv.org/abs/2304.05659) trains
its token-mixer-free student with a teacher that has token mixers: logit
distillation (soft targets, without the ground-truth labels, guideline 1)
plus *module imitation*, which makes every train-time affine token mixer
behave like the teacher's token mixer at the same place (guideline 3). The
objective has the paper's form ``L_soft + λ1 L_in + λ2 L_out + λ3 L_rel``:
``L_in`` on the blocks' outputs (the paper's block-level form of matching
the token mixers' inputs), ``L_out`` on the token mixers' outputs and
``L_rel`` on the relation matrices of the blocks' outputs. See
``docs/riformer.md`` for what comes from the paper and what does not.

:class:`RIFormerDistiller` is MMPretrain's ``ImageClassifier`` (the student:
backbone, neck, head, data preprocessor) plus a frozen teacher classifier.
In ``mode='loss'`` it runs the teacher (no gradient, eval mode) and the
student on the same batch, records the inputs and outputs of the paired
token mixers and the outputs of their blocks through forward hooks, and
returns the named losses ``loss_kd``, ``loss_mi_in``, ``loss_mi_out``,
``loss_mi_rel`` (and ``loss`` of the head when ``use_gt=True``).
``predict`` and ``tensor`` are the student's alone.

The teacher is kept outside the module tree: it is not in ``state_dict()``
(a checkpoint written during distillation is the student's, and loads
strictly into the same classifier without a teacher, e.g.
``configs/riformer/riformer_s12_in1k_cls.py``), not in ``parameters()``
(the optimizer never sees it) and not re-initialised by ``init_weights``;
``.to()`` / ``.cuda()`` / ``.half()`` move it with the student.
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner.checkpoint import load_checkpoint
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS as PRETRAIN_MODELS
from torch import Tensor

from mmvitmix.registry import MODELS
from mmvitmix.utils import allow_mmengine_checkpoints
from ..backbones.riformer import AffineTokenMixer

ModuleOrCfg = Union[nn.Module, dict, str]
IN_FEATURES = ('block_output', 'mixer_input')


def build_teacher(teacher: ModuleOrCfg,
                  checkpoint: Optional[str] = None) -> nn.Module:
    """Build a frozen classifier from a module, a model config or a file.

    Args:
        teacher (nn.Module | dict | str): a built model, a model config
            (``dict(type='ImageClassifier', ...)``, any MMPretrain
            classifier or one with mmvitmix parts) or the path of a config
            file whose ``model`` is taken.
        checkpoint (str | None): weights loaded strictly into the teacher.

    Returns:
        nn.Module: the teacher in eval mode, every parameter with
        ``requires_grad=False``.
    """
    if isinstance(teacher, str):
        teacher = Config.fromfile(teacher)['model']
    if isinstance(teacher, dict):
        teacher = PRETRAIN_MODELS.build(copy.deepcopy(teacher))
        if hasattr(teacher, 'init_weights'):
            teacher.init_weights()
    elif not isinstance(teacher, nn.Module):
        raise TypeError(
            'RIFormerDistiller: teacher must be a model config (dict), a '
            f'config file path (str) or an nn.Module, got '
            f'{type(teacher).__name__}')
    if checkpoint is not None:
        allow_mmengine_checkpoints()
        load_checkpoint(
            teacher, checkpoint, map_location='cpu', strict=True,
            logger='current')
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher.eval()


@MODELS.register_module()
class RIFormerDistiller(ImageClassifier):
    """Image classifier trained by distillation with module imitation.

    Args:
        backbone (dict): the student backbone (``type='mmvitmix.RIFormer'``
            in the training structure for module imitation).
        teacher (dict | str | nn.Module): the teacher classifier: a model
            config, a config file (its ``model``) or a module. It must
            return logits of the student's classes from
            ``teacher(inputs, mode='tensor')`` (any MMPretrain
            ``ImageClassifier``). It sees the student's preprocessed
            (normalised, batch-augmented) inputs.
        neck (dict | None): student neck. Default: None.
        head (dict | None): student head; ``head(feats)`` gives the logits.
        teacher_ckpt (str | None): checkpoint loaded strictly into the
            teacher. Default: None (keep the teacher's own init; tests).
        distill_loss (dict | None): logit distillation loss, called as
            ``loss(student_logits, teacher_logits)``; logged as
            ``loss_kd``. Default: soft ``mmvitmix.KDLoss`` (τ = 1).
        imitation_in_loss (dict | None): the paper's ``L_in``, called with
            the lists of student and teacher features chosen by
            ``imitation_in_features``; logged as ``loss_mi_in``. None
            switches it off. Default: ``mmvitmix.ModuleImitationLoss``.
        imitation_in_features (str): what ``L_in`` matches.
            ``'block_output'``: the output of each paired token mixer's
            block (its parent module), the paper's block-level form
            ``‖T_s^(m+1) − T_t^(m+1)‖²``, which also matches the next
            block's token-mixer input before its norm. ``'mixer_input'``:
            the token mixers' inputs (``norm1(x)`` of the block), the
            paper's form before that simplification. Default:
            ``'block_output'``.
        imitation_out_loss (dict | None): the paper's ``L_out`` on the
            token mixers' outputs (the residual branch before layer scale:
            ``a ⊙ y + b − y`` in the student, e.g. ``pool(y) − y`` in a
            PoolFormer teacher); logged as ``loss_mi_out``. Default:
            ``mmvitmix.ModuleImitationLoss``.
        imitation_rel_loss (dict | None): the paper's ``L_rel`` on the
            blocks' outputs, called with the lists of student and teacher
            block outputs; logged as ``loss_mi_rel``. Default:
            ``mmvitmix.RelationImitationLoss`` (token relation
            ``T Tᵀ / C``).
        imitation_pairs (str | Sequence[Sequence[str]]): which modules
            imitate which. ``'auto'``: the student's affine token mixers in
            order, paired with the teacher's modules named ``token_mixer``
            in order (their numbers must agree; a PoolFormer or RIFormer
            teacher of the same depths qualifies). Else a list of
            ``(student_module, teacher_module)`` names, e.g.
            ``('backbone.stages.0.blocks.0.token_mixer',
            'backbone.network.0.0.token_mixer')``. Paired inputs and outputs
            must have equal shapes. Default: ``'auto'``.
        use_gt (bool): also train on the labels with the head's own loss
            (``loss`` in the log). RIFormer's guideline 1 says not to.
            Default: False.
        init_student_from_teacher (bool): after ``init_weights``, copy the
            teacher's weights into the student wherever a student parameter
            has the same name and shape (the teacher's backbone state passes
            the student backbone's checkpoint converter first, so a
            PoolFormer teacher maps onto RIFormer), leaving the rest (the
            affine token mixers) as initialised: guideline 5. The copied and
            the kept keys are logged. Default: False.
        pretrained, train_cfg, data_preprocessor, init_cfg: as MMPretrain's
            ``ImageClassifier``.
    """

    def __init__(self,
                 backbone: dict,
                 teacher: ModuleOrCfg,
                 neck: Optional[dict] = None,
                 head: Optional[dict] = None,
                 teacher_ckpt: Optional[str] = None,
                 distill_loss: Optional[dict] = dict(
                     type='mmvitmix.KDLoss', mode='soft', tau=1.0,
                     loss_weight=1.0),
                 imitation_in_loss: Optional[dict] = dict(
                     type='mmvitmix.ModuleImitationLoss', loss_weight=1.0),
                 imitation_out_loss: Optional[dict] = dict(
                     type='mmvitmix.ModuleImitationLoss', loss_weight=1.0),
                 imitation_rel_loss: Optional[dict] = dict(
                     type='mmvitmix.RelationImitationLoss', relation='token',
                     loss_weight=1.0),
                 imitation_in_features: str = 'block_output',
                 imitation_pairs: Union[str, Sequence[Sequence[str]]] = 'auto',
                 use_gt: bool = False,
                 init_student_from_teacher: bool = False,
                 pretrained: Optional[str] = None,
                 train_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(
            backbone=backbone,
            neck=neck,
            head=head,
            pretrained=pretrained,
            train_cfg=train_cfg,
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        if self.head is None:
            raise ValueError('RIFormerDistiller: the student needs a head '
                             '(its logits are distilled)')
        if not isinstance(use_gt, bool):
            raise TypeError(f'RIFormerDistiller: use_gt must be a bool, got '
                            f'{use_gt!r}')
        if imitation_in_features not in IN_FEATURES:
            raise ValueError(
                'RIFormerDistiller: imitation_in_features must be one of '
                f'{IN_FEATURES}, got {imitation_in_features!r}')
        if distill_loss is None and not use_gt and \
                imitation_in_loss is None and imitation_out_loss is None \
                and imitation_rel_loss is None:
            raise ValueError('RIFormerDistiller: every loss is switched '
                             'off; set distill_loss, an imitation loss or '
                             'use_gt=True')
        if not isinstance(init_student_from_teacher, bool):
            raise TypeError(
                'RIFormerDistiller: init_student_from_teacher must be a '
                f'bool, got {init_student_from_teacher!r}')
        self.use_gt = use_gt
        self.init_student_from_teacher = init_student_from_teacher
        # kept out of the module tree on purpose (see the module docstring)
        object.__setattr__(self, '_teacher',
                           build_teacher(teacher, teacher_ckpt))
        self.distill_loss = self._build_loss(distill_loss)
        self.imitation_in_loss = self._build_loss(imitation_in_loss)
        self.imitation_out_loss = self._build_loss(imitation_out_loss)
        self.imitation_rel_loss = self._build_loss(imitation_rel_loss)
        self.imitation_in_features = imitation_in_features
        self.imitation_pairs: List[Tuple[str, str]] = []
        self._records: Dict[str, Dict[str, list]] = {
            side: dict(mixer=[], block=[])
            for side in ('student', 'teacher')
        }
        self._recording: Optional[str] = None
        if any(loss is not None for loss in (self.imitation_in_loss,
                                             self.imitation_out_loss,
                                             self.imitation_rel_loss)):
            self.imitation_pairs = self._resolve_pairs(imitation_pairs)
            self._add_hooks()
            print_log(
                f'RIFormerDistiller: {len(self.imitation_pairs)} module '
                f'imitation pairs, first {self.imitation_pairs[0]}',
                logger='current')

    # ------------------------------------------------------------------
    # construction
    # ------------------------------------------------------------------

    @staticmethod
    def _build_loss(cfg: Optional[dict]) -> Optional[nn.Module]:
        if cfg is None or isinstance(cfg, nn.Module):
            return cfg
        return MODELS.build(cfg)

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher (not a submodule: not saved, not optimised)."""
        return self._teacher

    def _resolve_pairs(self, pairs) -> List[Tuple[str, str]]:
        if getattr(self.backbone, 'with_cp', False):
            raise ValueError(
                'RIFormerDistiller: module imitation needs the student '
                'backbone without activation checkpointing (with_cp=False): '
                'a checkpointed block records tensors without gradient')
        student = dict(self.named_modules())
        teacher = dict(self.teacher.named_modules())
        if pairs == 'auto':
            s_names = [
                n for n, m in student.items()
                if isinstance(m, AffineTokenMixer)
            ]
            t_names = [n for n in teacher if n.split('.')[-1] == 'token_mixer']
            if not s_names:
                raise ValueError(
                    'RIFormerDistiller: imitation_pairs="auto" found no '
                    'affine token mixer in the student (a deploy-structure '
                    'RIFormer has none); build the training structure or '
                    'switch the imitation losses off (None)')
            if len(s_names) != len(t_names):
                raise ValueError(
                    f'RIFormerDistiller: imitation_pairs="auto" found '
                    f'{len(s_names)} affine token mixers in the student but '
                    f'{len(t_names)} modules named "token_mixer" in the '
                    'teacher; give imitation_pairs as a list of '
                    '(student_module, teacher_module) names')
            return list(zip(s_names, t_names))
        if isinstance(pairs, str) or not isinstance(pairs, (list, tuple)) \
                or not pairs:
            raise ValueError(
                'RIFormerDistiller: imitation_pairs must be "auto" or a '
                'non-empty list of (student_module, teacher_module) names, '
                f'got {pairs!r}')
        result = []
        for pair in pairs:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(
                    'RIFormerDistiller: every imitation pair must be '
                    f'(student_module, teacher_module), got {pair!r}')
            s_name, t_name = pair
            if s_name not in student or s_name == '':
                raise ValueError(
                    f'RIFormerDistiller: the student has no module '
                    f'{s_name!r}; e.g. '
                    f'{[n for n in student if n.endswith("token_mixer")][:2]}'
                )
            if t_name not in teacher or t_name == '':
                raise ValueError(
                    f'RIFormerDistiller: the teacher has no module '
                    f'{t_name!r}; e.g. '
                    f'{[n for n in teacher if n.endswith("token_mixer")][:2]}'
                )
            result.append((s_name, t_name))
        return result

    @staticmethod
    def _block_of(side: str, name: str, modules: Dict[str, nn.Module]) -> str:
        """The module whose output is the imitated module's block output."""
        if '.' not in name:
            raise ValueError(
                f'RIFormerDistiller: the {side} module {name!r} has no '
                'parent block; imitation pairs name token mixers inside '
                'blocks, e.g. "backbone.stages.0.blocks.0.token_mixer"')
        return name.rsplit('.', 1)[0]

    def _add_hooks(self) -> None:
        student = dict(self.named_modules())
        teacher = dict(self.teacher.named_modules())
        for s_name, t_name in self.imitation_pairs:
            for side, name, modules in (('student', s_name, student),
                                        ('teacher', t_name, teacher)):
                modules[name].register_forward_hook(
                    self._recorder(side, 'mixer'))
                block = self._block_of(side, name, modules)
                modules[block].register_forward_hook(
                    self._recorder(side, 'block'))

    def _recorder(self, side: str, kind: str):

        def hook(module, inputs, output):
            if self._recording == side:
                if kind == 'mixer':
                    self._records[side][kind].append((inputs[0], output))
                else:
                    self._records[side][kind].append(output)

        return hook

    def init_weights(self) -> None:
        super().init_weights()
        if self.init_student_from_teacher:
            self.copy_teacher_weights()

    def copy_teacher_weights(self) -> Dict[str, List[str]]:
        """Copy same-named, same-shaped teacher weights into the student.

        Part by part (``backbone``, ``neck``, ``head``); the teacher's
        backbone state goes through the student backbone's ``converter``
        (e.g. :func:`convert_riformer`, which maps PoolFormer's layout)
        when it has one. A name that exists in both with different shapes
        is an error (the two are not the same architecture).

        Returns:
            dict: ``copied`` and ``kept`` (student keys left as they were).
        """
        copied, kept = [], []
        for part in ('backbone', 'neck', 'head'):
            s_mod = getattr(self, part, None)
            t_mod = getattr(self.teacher, part, None)
            if s_mod is None:
                continue
            source = t_mod.state_dict() if t_mod is not None else {}
            converter = getattr(s_mod, 'converter', None)
            if part == 'backbone' and converter is not None and source:
                source = converter(source)
            target = s_mod.state_dict()
            for key, value in target.items():
                if key not in source:
                    kept.append(f'{part}.{key}')
                    continue
                if source[key].shape != value.shape:
                    raise ValueError(
                        f'RIFormerDistiller: init_student_from_teacher: '
                        f'{part}.{key} has shape {tuple(value.shape)} in the '
                        f'student but {tuple(source[key].shape)} in the '
                        'teacher; the student must have the teacher\'s '
                        'architecture apart from the token mixers')
                with torch.no_grad():
                    value.copy_(source[key])
                copied.append(f'{part}.{key}')
        if not copied:
            raise ValueError('RIFormerDistiller: init_student_from_teacher '
                             'found no teacher weight with a student name')
        print_log(
            f'RIFormerDistiller: copied {len(copied)} tensors from the '
            f'teacher; kept {len(kept)} of the student as initialised: '
            f'{kept[:6]}{" ..." if len(kept) > 6 else ""}',
            logger='current')
        return dict(copied=copied, kept=kept)

    # ------------------------------------------------------------------
    # the teacher stays frozen, in eval mode, on the student's device
    # ------------------------------------------------------------------

    def train(self, mode: bool = True) -> 'RIFormerDistiller':
        super().train(mode)
        self.teacher.eval()
        return self

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        return self

    # ------------------------------------------------------------------
    # losses
    # ------------------------------------------------------------------

    def _run(self, side: str, fn):
        self._records[side] = dict(mixer=[], block=[])
        self._recording = side
        try:
            return fn()
        finally:
            self._recording = None

    def _teacher_logits(self, inputs: Tensor) -> Tensor:
        with torch.no_grad():
            logits = self._run('teacher',
                               lambda: self.teacher(inputs, mode='tensor'))
        if not isinstance(logits, Tensor):
            raise TypeError(
                'RIFormerDistiller: teacher(inputs, mode="tensor") must '
                f'return the logits tensor, got {type(logits).__name__} '
                '(use a classifier with a plain classification head)')
        return logits

    def imitation_features(self) -> Dict[str, Tuple[list, list]]:
        """The recorded features, as ``(student, teacher)`` lists.

        Keys: ``'mixer_input'`` and ``'mixer_output'`` (the paired token
        mixers' input and output) and ``'block_output'`` (the output of
        their blocks). Valid after :meth:`loss`; one entry per imitation
        pair, in order.
        """
        n = len(self.imitation_pairs)
        for kind in ('mixer', 'block'):
            s_rec = self._records['student'][kind]
            t_rec = self._records['teacher'][kind]
            if len(s_rec) != n or len(t_rec) != n:
                what = 'imitated modules' if kind == 'mixer' else 'blocks'
                raise RuntimeError(
                    f'RIFormerDistiller: expected one call of each of the '
                    f'{n} {what} per forward, recorded {len(s_rec)} '
                    f'(student) and {len(t_rec)} (teacher); a module called '
                    'more than once (shared) cannot be paired')
        s_mix, t_mix = self._records['student']['mixer'], \
            self._records['teacher']['mixer']
        return {
            'mixer_input': ([r[0] for r in s_mix], [r[0] for r in t_mix]),
            'mixer_output': ([r[1] for r in s_mix], [r[1] for r in t_mix]),
            'block_output': (list(self._records['student']['block']),
                             list(self._records['teacher']['block'])),
        }

    def loss(self, inputs: Tensor, data_samples) -> Dict[str, Tensor]:
        """The named losses of one batch (see the class docstring)."""
        teacher_logits = self._teacher_logits(inputs)
        feats = self._run('student', lambda: self.extract_feat(inputs))
        logits = self.head(feats)
        losses = {}
        if self.use_gt:
            losses.update(self.head._get_loss(logits, data_samples))
        if self.distill_loss is not None:
            losses['loss_kd'] = self.distill_loss(logits, teacher_logits)
        if self.imitation_pairs:
            feats = self.imitation_features()
            if self.imitation_in_loss is not None:
                losses['loss_mi_in'] = self.imitation_in_loss(
                    *feats[self.imitation_in_features])
            if self.imitation_out_loss is not None:
                losses['loss_mi_out'] = self.imitation_out_loss(
                    *feats['mixer_output'])
            if self.imitation_rel_loss is not None:
                losses['loss_mi_rel'] = self.imitation_rel_loss(
                    *feats['block_output'])
        return losses

    def extra_repr(self) -> str:
        return (f'teacher={type(self.teacher).__name__} (frozen, not saved), '
                f'imitation_pairs={len(self.imitation_pairs)}, '
                f'imitation_in_features={self.imitation_in_features!r}, '
                f'use_gt={self.use_gt}')

