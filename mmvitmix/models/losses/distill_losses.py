"""Losses of knowledge distillation, as used by :class:`RIFormerDistiller`.

All are plain ``nn.Module`` losses registered in :data:`mmvitmix.registry.
MODELS` (``type='mmvitmix.KDLoss'``, ``'mmvitmix.ModuleImitationLoss'``,
``'mmvitmix.RelationImitationLoss'``); they take tensors and return a
scalar, with ``loss_weight`` applied.
"""
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmvitmix.registry import MODELS
from ..backbones.base import check_number

KD_MODES = ('soft', 'hard')
RELATIONS = ('token', 'channel')


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
        losses = []
        for i, (s, t) in enumerate(
                _pairs('ModuleImitationLoss', student, teacher)):
            if s.shape != t.shape:
                raise ValueError(
                    f'ModuleImitationLoss: pair {i} has student shape '
                    f'{tuple(s.shape)} and teacher shape {tuple(t.shape)}; '
                    'imitated modules must have the same shapes')
            losses.append(F.mse_loss(s, t.detach()))
        return self.loss_weight * torch.stack(losses).mean()


def _pairs(name: str, student, teacher) -> List[Tuple[Tensor, Tensor]]:
    """Equally long sequences (or single tensors) as a list of pairs."""
    if isinstance(student, Tensor):
        student, teacher = [student], [teacher]
    if len(student) != len(teacher) or not student:
        raise ValueError(
            f'{name}: needs as many teacher as student features (at least '
            f'one), got {len(student)} and {len(teacher)}')
    return list(zip(student, teacher))


def _tokens(name: str, i: int, x: Tensor) -> Tensor:
    """(B, C, H, W) or (B, N, C) features as (B, N, C) tokens."""
    if x.dim() == 4:
        return x.flatten(2).transpose(1, 2)
    if x.dim() == 3:
        return x
    raise ValueError(
        f'{name}: pair {i}: features must be (B, C, H, W) maps or (B, N, C) '
        f'tokens, got shape {tuple(x.shape)}')


@MODELS.register_module()
class RelationImitationLoss(nn.Module):
    """Squared distance between the relation matrices of paired features.

    RIFormer's ``L_rel`` (module imitation, on the blocks' outputs): for each
    image, with ``T`` its ``N × C`` tokens, the token relation matrix is
    ``R(T) = T Tᵀ / C`` (``N × N``; ``relation='token'``) or the channel
    relation ``R(T) = Tᵀ T / N`` (``C × C``; ``relation='channel'``). The
    loss is ``loss_weight · mean_p mean_b mean_ij (R(S) − R(T))²_ij``: the
    element-wise mean over the matrix, the batch, then the pairs. The
    teacher features are detached.

    With ``D = S − T`` and ``U = S + T`` (equal widths), ``SSᵀ − TTᵀ =
    (DUᵀ + UDᵀ) / 2``, so the difference is never taken between large
    numbers (float32 agrees with the float64 form to about 1e-7 even for
    ``‖D‖/‖T‖ = 1e-4``). The ``N × N`` matrices are formed only where they
    are the cheaper form (``N < 1.5 C``, later stages); elsewhere
    ``‖SSᵀ − TTᵀ‖²_F = (⟨DᵀD, UᵀU⟩ + ⟨(DᵀU)ᵀ, DᵀU⟩) / 2``: three ``C × C``
    products, ``O(N·C²)`` time and memory. For a teacher of another width
    it uses ``‖SᵀS‖²/C_s² − 2‖SᵀT‖²/(C_s C_t) + ‖TᵀT‖²/C_t²`` (or the
    formed matrices), computed in float64 because those terms do cancel.

    Args:
        relation (str): ``'token'`` or ``'channel'``. Default: ``'token'``.
        loss_weight (float): factor on the loss (>= 0). Default: 1.0.
    """

    def __init__(self, relation: str = 'token', loss_weight: float = 1.0):
        super().__init__()
        if relation not in RELATIONS:
            raise ValueError(
                f'RelationImitationLoss: relation must be one of '
                f'{RELATIONS}, got {relation!r}')
        check_number('RelationImitationLoss', 'loss_weight', loss_weight,
                     low=0)
        self.relation = relation
        self.loss_weight = float(loss_weight)

    def forward(self, student: Union[Tensor, Sequence[Tensor]],
                teacher: Union[Tensor, Sequence[Tensor]]) -> Tensor:
        """Feature maps or tokens, or equally long sequences of them."""
        name = 'RelationImitationLoss'
        losses = []
        for i, (s, t) in enumerate(_pairs(name, student, teacher)):
            s, t = _tokens(name, i, s), _tokens(name, i, t.detach())
            if s.shape[:2] != t.shape[:2] or (
                    self.relation == 'channel' and s.shape != t.shape):
                need = ('the same batch, tokens and channels'
                        if self.relation == 'channel' else
                        'the same batch and number of tokens')
                raise ValueError(
                    f'{name}: pair {i} has student tokens '
                    f'{tuple(s.shape)} and teacher tokens {tuple(t.shape)} '
                    f'(B, N, C); relation={self.relation!r} needs {need}')
            if s.dtype in (torch.float16, torch.bfloat16):
                s, t = s.float(), t.float()
            t = t.to(s.dtype)
            n, cs, ct = s.shape[1], s.shape[2], t.shape[2]
            if cs == ct:
                # ssᵀ − ttᵀ = (D uᵀ + u Dᵀ) / 2 with D = s − t, u = s + t
                # (and sᵀs − tᵀt likewise): no difference of large numbers
                # in any form below
                d, u = s - t, s + t
            if self.relation == 'channel':
                # R(T) = TᵀT / N is C × C: form it
                diff = d.transpose(1, 2) @ u
                diff = (diff + diff.transpose(1, 2)) / (2 * n)
                losses.append(diff.pow(2).mean())
                continue
            if 4 * n < 3 * (cs + ct):
                # few tokens (N < 1.5 C): the N × N matrices are the cheaper
                # form, and no larger than the features
                if cs == ct:
                    diff = d @ u.transpose(1, 2)
                    diff = (diff + diff.transpose(1, 2)) / (2 * cs)
                else:
                    diff = (s.double() @ s.double().transpose(1, 2) / cs -
                            t.double() @ t.double().transpose(1, 2) /
                            ct).to(s.dtype)
                losses.append(diff.pow(2).mean())
                continue
            if cs == ct:
                du = d.transpose(1, 2) @ u
                sq = ((d.transpose(1, 2) @ d) * (u.transpose(1, 2) @ u) +
                      du * du.transpose(1, 2)).sum((1, 2)) / (2 * cs * cs)
            else:
                s64, t64 = s.double(), t.double()
                sq = ((s64.transpose(1, 2) @ s64).pow(2).sum((1, 2)) /
                      (cs * cs) - 2 *
                      (s64.transpose(1, 2) @ t64).pow(2).sum((1, 2)) /
                      (cs * ct) +
                      (t64.transpose(1, 2) @ t64).pow(2).sum((1, 2)) /
                      (ct * ct)).clamp_min(0).to(s.dtype)
            losses.append(sq.mean() / (n * n))
        return self.loss_weight * torch.stack(losses).mean()
