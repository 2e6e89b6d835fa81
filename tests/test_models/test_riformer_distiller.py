"""RIFormer's learning paradigm: RIFormerDistiller, KDLoss, module imitation.

Tiny models only (the demo configs' 5-block RIFormer student and PoolFormer
teacher, 16-128 channels), nothing downloaded.
"""
import copy
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('mmpretrain')

from mmengine.config import Config  # noqa: E402
from mmpretrain.registry import MODELS as PRETRAIN_MODELS  # noqa: E402
from mmpretrain.structures import DataSample  # noqa: E402
from mmpretrain.utils import register_all_modules  # noqa: E402

import mmvitmix.models  # noqa: E402,F401
from mmvitmix.models import RIFormer  # noqa: E402
from mmvitmix.models.losses import (  # noqa: E402
    KDLoss, ModuleImitationLoss, RelationImitationLoss)
from mmvitmix.registry import MODELS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DISTILL_CFG = REPO / 'configs' / 'demo' / 'cls_riformer_distill_demo.py'
STUDENT_CFG = REPO / 'configs' / 'demo' / 'cls_riformer_demo.py'
NUM_CLASSES = 3

register_all_modules(init_default_scope=False)


def model_cfg(**overrides):
    cfg = Config.fromfile(str(DISTILL_CFG)).model.to_dict()
    cfg['teacher_ckpt'] = None
    cfg.update(overrides)
    return cfg


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    model = PRETRAIN_MODELS.build(model_cfg(**overrides))
    model.init_weights()
    return model


def samples(labels):
    return [
        DataSample().set_gt_label(int(label)) for label in labels
    ]


def student_params(model):
    return dict(model.named_parameters())


# --------------------------------------------------------------------------
# the losses on hand-computed cases
# --------------------------------------------------------------------------


def test_kd_loss_soft_and_hard_by_hand():
    student = torch.tensor([[0., math.log(3.)]])  # softmax: 1/4, 3/4
    teacher = torch.tensor([[0., 0.]])  # softmax: 1/2, 1/2
    # KL(t || s) = 1/2 ln(1/2 / 1/4) + 1/2 ln(1/2 / 3/4) = 1/2 ln(4/3)
    soft = KDLoss(mode='soft', tau=1.0, loss_weight=2.0)(student, teacher)
    assert soft.item() == pytest.approx(math.log(4 / 3), rel=1e-5)
    # tau = 2: softmax(s / 2) = (1, √3) / (1 + √3); the τ² factor is 4
    root3 = math.sqrt(3.)
    p = [1 / (1 + root3), root3 / (1 + root3)]
    kl = sum(0.5 * (math.log(0.5) - math.log(q)) for q in p)
    tau2 = KDLoss(mode='soft', tau=2.0)(student, teacher)
    assert tau2.item() == pytest.approx(4 * kl, rel=1e-5)
    # hard: CE against argmax(teacher) = class 0, p_s(0) = 1/4
    hard = KDLoss(mode='hard')(student, torch.tensor([[1., 0.]]))
    assert hard.item() == pytest.approx(math.log(4.), rel=1e-5)


def test_kd_loss_matches_teacher_at_zero():
    logits = torch.randn(4, 5)
    assert KDLoss()(logits, logits.clone()).abs().item() < 1e-6


def test_module_imitation_loss_by_hand():
    loss = ModuleImitationLoss(loss_weight=2.0)
    student = [torch.tensor([1., 2.]), torch.tensor([[3.]])]
    teacher = [torch.zeros(2), torch.tensor([[1.]])]
    # pair 0: (1 + 4) / 2 = 2.5; pair 1: 4; mean 3.25; weight 2
    assert loss(student, teacher).item() == pytest.approx(6.5)


def direct_relation(s, t, relation='token'):
    """The relation loss with the matrices formed, in float64."""
    s, t = s.double(), t.double()
    if s.dim() == 4:
        s, t = s.flatten(2).transpose(1, 2), t.flatten(2).transpose(1, 2)
    if relation == 'channel':
        rs = s.transpose(1, 2) @ s / s.shape[1]
        rt = t.transpose(1, 2) @ t / t.shape[1]
    else:
        rs = s @ s.transpose(1, 2) / s.shape[2]
        rt = t @ t.transpose(1, 2) / t.shape[2]
    return ((rs - rt)**2).mean()


def test_relation_loss_by_hand():
    # one image, two tokens, one channel: R = T Tᵀ / 1
    s = torch.tensor([[[1.], [2.]]])  # R(s) = [[1, 2], [2, 4]]
    t = torch.tensor([[[1.], [0.]]])  # R(t) = [[1, 0], [0, 0]]
    # differences 0, 2, 2, 4: mean of squares (0 + 4 + 4 + 16) / 4 = 6
    loss = RelationImitationLoss(loss_weight=0.5)
    assert loss(s, t).item() == pytest.approx(3.0)
    # channel relation: R = Tᵀ T / N: 5 / 2 against 1 / 2, squared: 4
    loss = RelationImitationLoss(relation='channel')
    assert loss(s, t).item() == pytest.approx(4.0)


@pytest.mark.parametrize('relation, cs, ct', [
    ('token', 8, 8), ('token', 8, 12), ('channel', 8, 8)])
def test_relation_loss_matches_the_formed_matrices(relation, cs, ct):
    """The N × N matrices are never formed; value and gradient agree with
    the direct form in float64, for maps and tokens, several pairs."""
    torch.manual_seed(0)
    loss = RelationImitationLoss(relation=relation, loss_weight=1.5)
    s = [torch.randn(2, cs, 5, 6, dtype=torch.float64, requires_grad=True),
         torch.randn(2, 7, cs, dtype=torch.float64, requires_grad=True)]
    t = [torch.randn(2, ct, 5, 6, dtype=torch.float64),
         torch.randn(2, 7, ct, dtype=torch.float64)]
    got = loss(s, t)
    want = 1.5 * torch.stack(
        [direct_relation(a, b, relation) for a, b in zip(s, t)]).mean()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    g_got = torch.autograd.grad(got, s)
    g_want = torch.autograd.grad(want, s)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
    assert torch.autograd.gradcheck(
        lambda a: loss([a], [t[1]]), (s[1].detach().requires_grad_(), ))


@pytest.mark.parametrize('relation, channels, side', [
    ('token', 64, 56),  # RIFormer-S12's stage 1: the C x C form
    ('token', 512, 7),  # its stage 4: the N x N form
    ('channel', 64, 56),
])
def test_relation_loss_float32_without_cancellation(relation, channels,
                                                    side):
    # a student close to its teacher at real RIFormer-S12 sizes: float32
    # keeps the small difference (a plain expansion lost 4-10 % here)
    torch.manual_seed(0)
    t = torch.randn(2, channels, side, side)
    s = t + 1e-4 * torch.randn_like(t)
    got = RelationImitationLoss(relation=relation)(s, t).item()
    want = direct_relation(s, t, relation).item()
    assert got == pytest.approx(want, rel=1e-5)
    # half precision inputs are computed in float32
    got16 = RelationImitationLoss()(s.bfloat16(), t.bfloat16())
    assert got16.dtype == torch.float32


@pytest.mark.parametrize('kwargs, error', [
    (dict(mode='kl'), "mode must be one of \\('soft', 'hard'\\)"),
    (dict(tau=0), 'tau'),
    (dict(loss_weight=-1), 'loss_weight'),
])
def test_kd_loss_rejects_bad_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        KDLoss(**kwargs)


def test_losses_reject_mismatched_shapes():
    with pytest.raises(ValueError, match='same shape'):
        KDLoss()(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match='pair 0 has student shape'):
        ModuleImitationLoss()([torch.zeros(1, 2)], [torch.zeros(1, 3)])
    with pytest.raises(ValueError, match='as many teacher as student'):
        ModuleImitationLoss()([torch.zeros(1)], [])
    with pytest.raises(ValueError, match='same batch and number of tokens'):
        RelationImitationLoss()(torch.zeros(1, 4, 3, 3),
                                torch.zeros(1, 4, 3, 2))
    with pytest.raises(ValueError, match='same batch, tokens and channels'):
        RelationImitationLoss(relation='channel')(torch.zeros(1, 4, 3, 3),
                                                  torch.zeros(1, 5, 3, 3))
    with pytest.raises(ValueError, match='must be \\(B, C, H, W\\) maps'):
        RelationImitationLoss()(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError,
                       match="relation must be one of \\('token', "
                       "'channel'\\), got 'pixel'"):
        RelationImitationLoss(relation='pixel')


def test_losses_are_registered():
    assert MODELS.get('KDLoss') is KDLoss
    assert isinstance(
        PRETRAIN_MODELS.build(dict(type='mmvitmix.ModuleImitationLoss')),
        ModuleImitationLoss)
    assert isinstance(
        PRETRAIN_MODELS.build(dict(type='mmvitmix.RelationImitationLoss')),
        RelationImitationLoss)


# --------------------------------------------------------------------------
# the teacher: frozen, eval mode, not saved, not optimised
# --------------------------------------------------------------------------


def test_teacher_frozen_in_eval_mode_and_not_saved():
    model = build()
    teacher = model.teacher
    model.train()
    assert model.training and model.backbone.training
    assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    ids = {id(p) for p in model.parameters()}
    assert not ids & {id(p) for p in teacher.parameters()}
    assert not [k for k in model.state_dict() if 'teacher' in k]

    before = copy.deepcopy(teacher.state_dict())
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randn(2, 3, 64, 64)
    losses = model(x, samples([0, 1]), mode='loss')
    sum(losses.values()).backward()
    optim.step()
    assert all(p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    model.train()  # again: the teacher stays in eval mode
    assert not any(m.training for m in teacher.modules())


def test_teacher_from_a_config_file_and_a_checkpoint(tmp_path):
    source = build(seed=5)
    path = tmp_path / 'teacher.pth'
    torch.save({'state_dict': source.teacher.state_dict()}, path)
    model = build(
        teacher=str(REPO / 'configs' / 'demo' /
                    'cls_poolformer_teacher_demo.py'),
        teacher_ckpt=str(path))
    assert len(model.imitation_pairs) == 5
    for key, value in source.teacher.state_dict().items():
        assert torch.equal(model.teacher.state_dict()[key], value), key
    # strict: a checkpoint of another architecture is refused
    torch.save({'state_dict': {'backbone.nope': torch.zeros(1)}}, path)
    with pytest.raises(RuntimeError, match='nope'):
        build(teacher_ckpt=str(path))


def test_teacher_moves_with_the_student():
    model = build()
    model.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in model.teacher.parameters())
    out = model(torch.randn(1, 3, 64, 64, dtype=torch.float64),
                samples([2]), mode='loss')
    assert all(v.dtype == torch.float64 for v in out.values())


# --------------------------------------------------------------------------
# every loss term, with a gradient to the student only
# --------------------------------------------------------------------------


def test_every_loss_term_reaches_the_student():
    model = build()
    model.train()
    x = torch.randn(2, 3, 64, 64)
    losses = model(x, samples([0, 2]), mode='loss')
    assert set(losses) == {
        'loss_kd', 'loss_mi_in', 'loss_mi_out', 'loss_mi_rel'}
    params = student_params(model)
    # the part of the student each term must reach at least
    reaches = {
        'loss_kd': ['head.fc.weight', 'backbone.stem.weight'],
        'loss_mi_in': ['backbone.stem.weight',
                       'backbone.stages.0.blocks.0.norm1.weight',
                       'backbone.stages.3.blocks.0.token_mixer.weight',
                       'backbone.stages.3.blocks.0.ffn.fc2.weight'],
        'loss_mi_out': ['backbone.stages.0.blocks.0.token_mixer.weight',
                        'backbone.stages.3.blocks.0.token_mixer.bias'],
        'loss_mi_rel': ['backbone.stem.weight',
                        'backbone.stages.3.blocks.0.token_mixer.weight',
                        'backbone.stages.3.blocks.0.ffn.fc2.weight'],
    }
    for key, names in reaches.items():
        assert losses[key].requires_grad, key
        assert torch.isfinite(losses[key]) and losses[key] > 0, key
        grads = torch.autograd.grad(
            losses[key], [params[n] for n in names], retain_graph=True,
            allow_unused=True)
        for name, grad in zip(names, grads):
            assert grad is not None and grad.abs().max() > 0, (key, name)
    # nothing reaches the head but the logit distillation
    for key in ('loss_mi_in', 'loss_mi_out', 'loss_mi_rel'):
        grad = torch.autograd.grad(
            losses[key], params['head.fc.weight'], retain_graph=True,
            allow_unused=True)[0]
        assert grad is None or grad.abs().max() == 0, key
    # matching the mixers' inputs instead (the paper's form before its
    # block-level simplification): the last block's mixer feeds no
    # imitated input, so no gradient reaches it
    model = build(imitation_in_features='mixer_input')
    model.train()
    losses = model(x, samples([0, 2]), mode='loss')
    params = student_params(model)
    grad = torch.autograd.grad(
        losses['loss_mi_in'],
        params['backbone.stages.3.blocks.0.token_mixer.weight'],
        retain_graph=True, allow_unused=True)[0]
    assert grad is None or grad.abs().max() == 0


def test_ground_truth_loss_only_when_asked():
    model = build(use_gt=True)
    losses = model(torch.randn(2, 3, 64, 64), samples([0, 1]), mode='loss')
    assert set(losses) == {
        'loss', 'loss_kd', 'loss_mi_in', 'loss_mi_out', 'loss_mi_rel'}
    model = build(imitation_in_loss=None, imitation_out_loss=None,
                  imitation_rel_loss=None)
    assert model.imitation_pairs == []
    losses = model(torch.randn(2, 3, 64, 64), samples([0, 1]), mode='loss')
    assert set(losses) == {'loss_kd'}


# --------------------------------------------------------------------------
# module imitation matches the token mixers' inputs and outputs
# --------------------------------------------------------------------------


def test_module_imitation_pairs_and_hand_computed_first_block():
    model = build()
    model.train()
    names = [p for p in model.imitation_pairs]
    # 5 blocks (layers 1, 1, 2, 1), each to the teacher's block at the same
    # place: MMPretrain's PoolFormer interleaves blocks and downsamplings
    assert names == [
        ('backbone.stages.0.blocks.0.token_mixer',
         'backbone.network.0.0.token_mixer'),
        ('backbone.stages.1.blocks.0.token_mixer',
         'backbone.network.2.0.token_mixer'),
        ('backbone.stages.2.blocks.0.token_mixer',
         'backbone.network.4.0.token_mixer'),
        ('backbone.stages.2.blocks.1.token_mixer',
         'backbone.network.4.1.token_mixer'),
        ('backbone.stages.3.blocks.0.token_mixer',
         'backbone.network.6.0.token_mixer'),
    ]
    torch.manual_seed(1)
    with torch.no_grad():
        # layer scales away from their 1e-5 init, so that the block outputs
        # differ from the block inputs
        for name, param in list(model.named_parameters()) + list(
                model.teacher.named_parameters()):
            if 'gamma' in name or 'layer_scale' in name:
                param.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)
    losses = model(x, samples([0, 1]), mode='loss')
    feats = model.imitation_features()
    s_in, t_in = feats['mixer_input']
    s_out, t_out = feats['mixer_output']
    s_blk, t_blk = feats['block_output']
    assert len(s_in) == len(t_in) == len(s_out) == len(t_out) == 5
    assert len(s_blk) == len(t_blk) == 5

    with torch.no_grad():
        # student, first block: y = norm1(stem(x)), mixer a ⊙ y + b − y
        block = model.backbone.stages[0].blocks[0]
        x0 = model.backbone.stem(x)
        y = block.norm1(x0)
        a = block.token_mixer.weight.view(1, -1, 1, 1)
        b = block.token_mixer.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(s_in[0], y)
        torch.testing.assert_close(s_out[0], a * y + b - y)
        # and the block's output, T^(m+1) = x1 + γ2 ⊙ ffn(norm2(x1)) with
        # x1 = x0 + γ1 ⊙ mixer(y)
        x1 = x0 + block.gamma1.view(1, -1, 1, 1) * (a * y + b - y)
        out = x1 + block.gamma2.view(1, -1, 1, 1) * block.ffn(block.norm2(x1))
        torch.testing.assert_close(s_blk[0], out)
        # teacher, first block: y = norm1(patch_embed(x)), pool(y) − y
        tb = model.teacher.backbone
        block = tb.network[0][0]
        x0 = tb.patch_embed(x)
        y = block.norm1(x0)
        pooled = F.avg_pool2d(y, 3, 1, 1, count_include_pad=False)
        torch.testing.assert_close(t_in[0], y)
        torch.testing.assert_close(t_out[0], pooled - y)
        x1 = x0 + block.layer_scale_1.view(1, -1, 1, 1) * (pooled - y)
        out = x1 + block.layer_scale_2.view(1, -1, 1, 1) * block.mlp(
            block.norm2(x1))
        torch.testing.assert_close(t_blk[0], out)
        # the last pair's block is the backbone's last block
        torch.testing.assert_close(
            s_blk[4], model.backbone.stages[3].blocks[0](
                model.backbone.stages[3].downsample(s_blk[3])))
        # the losses: L_in on the block outputs, L_out on the mixer
        # outputs, each the mean over the pairs of the element-wise mean
        # square; L_rel on the token relations of the block outputs
        want_in = np.mean([float(((s - t)**2).mean())
                           for s, t in zip(s_blk, t_blk)])
        want_out = np.mean([float(((s - t)**2).mean())
                            for s, t in zip(s_out, t_out)])
        want_rel = np.mean([float(direct_relation(s, t))
                            for s, t in zip(s_blk, t_blk)])
    assert losses['loss_mi_in'].item() == pytest.approx(want_in, rel=1e-5)
    assert losses['loss_mi_out'].item() == pytest.approx(want_out, rel=1e-5)
    assert losses['loss_mi_rel'].item() == pytest.approx(want_rel, rel=1e-4)
    assert not any(t.requires_grad for t in t_in + t_out + t_blk)
    # the paper's form before its simplification: the mixers' inputs
    model.imitation_in_features = 'mixer_input'
    losses = model(x, samples([0, 1]), mode='loss')
    with torch.no_grad():
        s_in, t_in = model.imitation_features()['mixer_input']
        want = np.mean([float(((s - t)**2).mean())
                        for s, t in zip(s_in, t_in)])
    assert losses['loss_mi_in'].item() == pytest.approx(want, rel=1e-5)


def test_explicit_imitation_pairs():
    pairs = [('backbone.stages.2.blocks.1.token_mixer',
              'backbone.network.4.1.token_mixer')]
    model = build(imitation_pairs=pairs)
    assert model.imitation_pairs == [tuple(p) for p in pairs]
    model(torch.randn(1, 3, 64, 64), samples([0]), mode='loss')
    feats = model.imitation_features()
    for kind in ('mixer_input', 'mixer_output', 'block_output'):
        s, t = feats[kind]
        assert s[0].shape == t[0].shape == (1, 64, 4, 4), kind


@pytest.mark.parametrize('overrides, error', [
    (dict(imitation_pairs=[('backbone.nope', 'backbone.network.0.0')]),
     "the student has no module 'backbone.nope'"),
    (dict(imitation_pairs=[('backbone.stages.0.blocks.0.token_mixer',
                            'nope')]),
     "the teacher has no module 'nope'"),
    (dict(imitation_pairs='first'), 'must be "auto" or a non-empty list'),
    (dict(imitation_pairs=[('only_one', )]), 'must be \\(student_module'),
    (dict(imitation_pairs=[('backbone', 'backbone.network.0.0.token_mixer')]
          ), "student module 'backbone' has no parent block"),
    (dict(imitation_in_features='mixer_output'),
     "imitation_in_features must be one of \\('block_output', "
     "'mixer_input'\\), got 'mixer_output'"),
])
def test_bad_imitation_pairs(overrides, error):
    with pytest.raises(ValueError, match=error):
        build(**overrides)


def test_auto_pairs_need_equal_counts_and_a_training_structure():
    cfg = model_cfg()
    cfg['teacher']['backbone']['arch']['layers'] = [1, 1, 1, 1]
    with pytest.raises(ValueError, match='found 5 affine token mixers'):
        PRETRAIN_MODELS.build(cfg)
    cfg = model_cfg()
    cfg['backbone']['deploy'] = True
    with pytest.raises(ValueError, match='found no affine token mixer'):
        PRETRAIN_MODELS.build(cfg)
    cfg = model_cfg()
    cfg['backbone']['with_cp'] = True
    with pytest.raises(ValueError, match='with_cp=False'):
        PRETRAIN_MODELS.build(cfg)
    with pytest.raises(TypeError, match='teacher must be a model config'):
        PRETRAIN_MODELS.build(model_cfg(teacher=3))


def test_mismatched_widths_are_named():
    cfg = model_cfg()
    cfg['teacher']['backbone']['arch']['embed_dims'] = [16, 32, 64, 96]
    cfg['teacher']['head']['in_channels'] = 96
    model = PRETRAIN_MODELS.build(cfg)
    with pytest.raises(ValueError, match='pair 4 has student shape'):
        model(torch.randn(1, 3, 64, 64), samples([0]), mode='loss')


# --------------------------------------------------------------------------
# guideline 5: the student starts from the teacher but its token mixers
# --------------------------------------------------------------------------


def test_init_student_from_teacher():
    model = build()
    tb = model.teacher.backbone
    torch.testing.assert_close(model.backbone.stem.weight,
                               tb.patch_embed.proj.weight)
    torch.testing.assert_close(
        model.backbone.stages[2].blocks[1].ffn.fc2.weight,
        tb.network[4][1].mlp.fc2.weight)
    torch.testing.assert_close(model.backbone.norm3.weight, tb.norm6.weight)
    torch.testing.assert_close(model.head.fc.weight,
                               model.teacher.head.fc.weight)
    report = model.copy_teacher_weights()
    assert sorted(report['kept']) == sorted(
        f'backbone.stages.{s}.blocks.{b}.token_mixer.{w}'
        for s, b in ((0, 0), (1, 0), (2, 0), (2, 1), (3, 0))
        for w in ('weight', 'bias'))
    # switched off: the student keeps its own init
    model = build(init_student_from_teacher=False)
    assert not torch.equal(model.backbone.stem.weight,
                           model.teacher.backbone.patch_embed.proj.weight)


# --------------------------------------------------------------------------
# training lowers the distillation loss (shape crops, trained teacher)
# --------------------------------------------------------------------------


def shape_batches(tmp_path, size=32, count=96):
    """``count`` training crops of the bundled shapes, normalised, NCHW."""
    import cv2
    spec = importlib.util.spec_from_file_location(
        'make_demo_cls',
        REPO / 'tools' / 'dataset_converters' / 'make_demo_cls.py')
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    out = tmp_path / 'cls'
    assert conv.main(['--src', str(REPO / 'data' / 'demo' / 'coco'),
                      '--out', str(out)]) == 0
    files = []
    for label, name in enumerate(('circle', 'square', 'triangle')):
        files += [(p, label)
                  for p in sorted((out / 'train' / name).glob('*.png'))]
    rng = np.random.default_rng(0)
    picked = [files[i] for i in rng.permutation(len(files))[:count]]
    images = np.stack([
        cv2.resize(cv2.imread(str(p)), (size, size)) for p, _ in picked
    ]).astype(np.float32)
    x = torch.from_numpy((images - 128.) / 64.).permute(0, 3, 1, 2)
    y = torch.tensor([label for _, label in picked])
    return x.contiguous(), y


def test_distillation_steps_lower_the_losses(tmp_path):
    torch.manual_seed(0)
    x, y = shape_batches(tmp_path)
    # a tiny teacher, trained here on the crops
    teacher_cfg = model_cfg()['teacher']
    teacher = PRETRAIN_MODELS.build(teacher_cfg)
    teacher.init_weights()
    optim = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
    teacher.train()
    for step in range(60):
        idx = torch.arange(step * 32, step * 32 + 32) % len(x)
        loss = F.cross_entropy(teacher(x[idx], mode='tensor'), y[idx])
        optim.zero_grad()
        loss.backward()
        optim.step()
    teacher.eval()
    with torch.no_grad():
        acc = (teacher(x, mode='tensor').argmax(1) == y).float().mean()
    assert acc > 0.6, f'teacher train accuracy {acc:.2f} (chance 0.33)'

    # the student from scratch (guideline 5 off), so the losses start high
    torch.manual_seed(0)
    model = PRETRAIN_MODELS.build(
        model_cfg(teacher=teacher, init_student_from_teacher=False))
    model.init_weights()
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for step in range(80):
        idx = torch.arange(step * 32, step * 32 + 32) % len(x)
        losses = model(x[idx], samples(y[idx]), mode='loss')
        optim.zero_grad()
        sum(losses.values()).backward()
        optim.step()
        history.append({k: v.item() for k, v in losses.items()})
    for key in ('loss_kd', 'loss_mi_in', 'loss_mi_out', 'loss_mi_rel'):
        first = np.mean([h[key] for h in history[:3]])
        last = np.mean([h[key] for h in history[-3:]])
        # the student's features start near zero (its stem and
        # downsampling are freshly initialised), so the block-output terms
        # fall slowest: 0.264 -> 0.188 and 0.088 -> 0.066 here
        assert last < 0.8 * first, (key, first, last)


# --------------------------------------------------------------------------
# the student's checkpoint: RIFormer, the plain classifier, deploy form
# --------------------------------------------------------------------------


def test_checkpoint_round_trip_and_reparameterize(tmp_path):
    model = build()
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(3)
    for _ in range(3):  # move every weight off its initial value
        losses = model(torch.randn(2, 3, 64, 64), samples([0, 1]),
                       mode='loss')
        optim.zero_grad()
        sum(losses.values()).backward()
        optim.step()
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x, mode='tensor')
        feats = model.backbone(x)
    state = model.state_dict()
    ckpt = tmp_path / 'distilled.pth'
    torch.save({'state_dict': state, 'meta': {}}, ckpt)

    # 1) the plain student classifier loads it strictly
    student_cfg = Config.fromfile(str(STUDENT_CFG)).model.to_dict()
    plain = PRETRAIN_MODELS.build(student_cfg).eval()
    plain.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(plain(x, mode='tensor'), logits)

    # 2) mmvitmix.RIFormer loads its backbone like any RIFormer checkpoint
    backbone_cfg = dict(student_cfg['backbone'])
    backbone_cfg.pop('type')
    backbone_cfg['init_cfg'] = dict(
        type='Pretrained', checkpoint=str(ckpt), prefix='backbone.')
    riformer = RIFormer(**backbone_cfg)
    riformer.init_weights()
    riformer.eval()
    with torch.no_grad():
        torch.testing.assert_close(riformer(x)[0], feats[0])

    # 3) tools/deploy/reparameterize.py turns it into the deploy form
    spec = importlib.util.spec_from_file_location(
        'reparameterize', REPO / 'tools' / 'deploy' / 'reparameterize.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / 'deploy.pth'
    summary = tool.reparameterize(str(STUDENT_CFG), str(ckpt), str(out),
                                  shape=(64, 64))
    assert summary['max_rel_diff'] < 1e-5
    deploy_cfg = copy.deepcopy(student_cfg)
    deploy_cfg['backbone']['deploy'] = True
    deployed = PRETRAIN_MODELS.build(deploy_cfg).eval()
    deployed.load_state_dict(torch.load(out)['state_dict'], strict=True)
    assert not [k for k in deployed.state_dict() if 'token_mixer' in k]
    with torch.no_grad():
        torch.testing.assert_close(
            deployed(x, mode='tensor'), logits, rtol=1e-4, atol=1e-5)
