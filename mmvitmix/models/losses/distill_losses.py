"""Losses of knowledge distillation, as used by :class:`RIFormerDistiller`.

Both are plain ``nn.Module`` losses registered in :data:`mmvitmix.registry.
MODELS` (``type='mmvitmix.KDLoss'`` / ``'mmvitmix.ModuleImitationLoss'``);
they take tensors and return a scalar, with ``loss_weight`` applied.
"""
from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmvitmix.registry import MODELS
from ..backbones.base import check_number

KD_MODES = ('soft', 'hard')


@MODELS.register_module()
class KDLoss(nn.Module):
    """Logit distillation from a teacher: soft (KL) or hard (CE) targets.

    ``mode='soft'`` (Hinton et al., 2015):
    ``τ² · KL(softmax(t / τ) ‖ softmax(s / τ))``, averaged over the batch
    (the ``τ²`` keeps gradient magnitudes comparable across ``τ``).
    ``mode='hard'`` (DeiT's hard distillation): cross-entropy of the student
    logits against ``argmax(t)``. The teacher logits are always detached.

    Args:
        mode (str): ``'soft'`` or ``'hard'``. Default: ``'soft'``.
        tau (float): softmax temperature of the soft mode (> 0).
            Default: 1.0.
        loss_weight (float): factor on the loss (>= 0). Default: 1.0.
    """

    def __init__(self,
                 mode: str = 'soft',
                 tau: float = 1.0,
                 loss_weight: float = 1.0):
        super().__init__()
        if mode not in KD_MODES:
            raise ValueError(f'KDLoss: mode must be one of {KD_MODES}, '
                             f'got {mode!r}')
        check_number('KDLoss', 'tau', tau, low=0, low_open=True)
        check_number('KDLoss', 'loss_weight', loss_weight, low=0)
        self.mode = mode
        self.tau = float(tau)
        self.loss_weight = float(loss_weight)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        """(B, K) student and teacher logits -> scalar loss."""
        if student.dim() != 2 or student.shape != teacher.shape:
            raise ValueError(
                'KDLoss: student and teacher logits must both be (B, K) '
                f'with the same shape, got {tuple(student.shape)} and '
                f'{tuple(teacher.shape)} (do both classify the same '
                'classes?)')
        teacher = teacher.detach()
        if self.mode == 'hard':
            loss = F.cross_entropy(student, teacher.argmax(dim=1))
        else:
            tau = self.tau
            loss = F.kl_div(
                F.log_softmax(student / tau, dim=1),
                F.log_softmax(teacher / tau, dim=1),
                reduction='batchmean',
                log_target=True) * tau * tau
        return self.loss_weight * loss


@MODELS.register_module()
class ModuleImitationLoss(nn.Module):
    """Mean squared error between paired student and teacher features.

    ``loss_weight · mean_p mean((s_p − t_p)²)``: for every pair ``p`` (e.g.
    one block's token-mixer input or output in student and teacher) the
    element-wise mean of the squared difference, then the mean over the
    pairs, so the scale does not grow with the depth. The teacher features
    are detached.

    Args:
        loss_weight (float): factor on the loss (>= 0). Default: 1.0.
    """

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        check_number('ModuleImitationLoss', 'loss_weight', loss_weight,
                      low=0)
        self.loss_weight = float(loss_weight)

    def forward(self, student: Union[Tensor, Sequence[Tensor]],
                teacher: Union[Tensor, Sequence[Tensor]]) -> Tensor:
        """Tensors or equally long sequences of same-shaped tensors."""
        if isinstance(student, Tensor):
            student, teacher = [student], [teacher]
        if len(student) != len(teacher) or not student:
            raise ValueError(
                'ModuleImitationLoss: needs as many teacher as student '
                f'features (at least one), got {len(student)} and '
                f'{len(teacher)}')
        losses = []
        for i, (s, t) in enumerate(zip(student, teacher)):
            if s.shape != t.shape:
                raise ValueError(
                    f'ModuleImitationLoss: pair {i} has student shape '
                    f'{tuple(s.shape)} and teacher shape {tuple(t.shape)}; '
                    'imitated modules must have the same shapes')
            losses.append(F.mse_loss(s, t.detach()))
        return self.loss_weight * torch.stack(losses).mean()
