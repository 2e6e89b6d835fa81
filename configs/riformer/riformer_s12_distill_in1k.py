# RIFormer-S12 trained with RIFormer's learning paradigm
# (docs/riformer.md): a frozen teacher with token mixers, soft logit
# distillation WITHOUT the ground-truth labels (guideline 1), module
# imitation of the teacher's token mixers by the student's affine token
# mixers (guideline 3), and the student initialised from the teacher's
# weights except the token mixers (guideline 5).
#
# Teacher: MMPretrain's PoolFormer-S12 (ImageNet top-1 77.24), not the
# paper's GFNet-H-B, which MMPretrain does not have: PoolFormer has the same
# macro structure, so every block's token mixer (pooling) pairs with the
# student's affine token mixer and its weights initialise the student.
# The objective has the paper's form, L_soft + λ1·L_in + λ2·L_out + λ3·L_rel
# (loss_kd, loss_mi_in, loss_mi_out, loss_mi_rel in the log). The weights λ,
# the temperature and the relation's normalisation are NOT the paper's
# values, which could not be read: see docs/riformer.md.
# The schedule is MMPretrain's RIFormer recipe (riformer_s12_in1k_cls.py).
#
#   F=poolformer-s12_3rdparty_32xb128_in1k_20220414-f8d83051.pth
#   wget -P checkpoints/poolformer \
#     https://download.openmmlab.com/mmclassification/v0/poolformer/$F
#   python tools/train.py configs/riformer/riformer_s12_distill_in1k.py
#
# The checkpoints written hold the student only (no teacher): they load
# into riformer_s12_in1k_cls.py and re-parameterise with
# tools/deploy/reparameterize.py like any RIFormer classifier.
_base_ = ['./riformer_s12_in1k_cls.py']

teacher_ckpt = ('checkpoints/poolformer/'
                'poolformer-s12_3rdparty_32xb128_in1k_20220414-f8d83051.pth')

model = dict(
    type='mmvitmix.RIFormerDistiller',
    teacher=dict(
        type='ImageClassifier',
        backbone=dict(type='PoolFormer', arch='s12'),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=512)),
    teacher_ckpt=teacher_ckpt,
    distill_loss=dict(
        type='mmvitmix.KDLoss', mode='soft', tau=1.0, loss_weight=1.0),
    imitation_in_loss=dict(
        type='mmvitmix.ModuleImitationLoss', loss_weight=1.0),
    imitation_out_loss=dict(
        type='mmvitmix.ModuleImitationLoss', loss_weight=1.0),
    imitation_rel_loss=dict(
        type='mmvitmix.RelationImitationLoss', relation='token',
        loss_weight=1.0),
    # L_in on the blocks' outputs, the paper's block-level form
    imitation_in_features='block_output',
    imitation_pairs='auto',
    use_gt=False,
    # guideline 5: every student weight from the teacher but the affine
    # token mixers (PoolFormer's pooling has none); PoolFormer's layout is
    # converted by the RIFormer backbone's converter
    init_student_from_teacher=True)
