# RIFormer's learning paradigm on the CPU in minutes: the tiny RIFormer of
# cls_riformer_demo.py distilled from the tiny PoolFormer teacher trained by
# cls_poolformer_teacher_demo.py (same schedule, same data): soft logit
# distillation without the labels (guideline 1), module imitation of every
# token mixer (guideline 3), the student initialised from the teacher but
# its affine token mixers (guideline 5). docs/riformer.md reports what it
# gives against the plain baseline.
#   python tools/dataset_converters/make_demo_cls.py --out data/demo/cls
#   python tools/train.py configs/demo/cls_poolformer_teacher_demo.py
#   python tools/train.py configs/demo/cls_riformer_distill_demo.py
# The log shows loss_kd, loss_mi_in, loss_mi_out and loss_mi_rel. The checkpoint is the
# student's alone: it loads into cls_riformer_demo.py, e.g.
#   python tools/deploy/reparameterize.py configs/demo/cls_riformer_demo.py \
#       work_dirs/demo_cls_riformer_distill/epoch_15.pth riformer_deploy.pth
_base_ = ['./cls_riformer_demo.py']

teacher_ckpt = 'work_dirs/demo_cls_poolformer_teacher/epoch_15.pth'

model = dict(
    type='mmvitmix.RIFormerDistiller',
    teacher=dict(
        type='ImageClassifier',
        backbone=dict(
            type='PoolFormer',
            arch=dict(
                layers=[1, 1, 2, 1],
                embed_dims=[16, 32, 64, 128],
                mlp_ratios=[4, 4, 4, 4],
                layer_scale_init_value=1e-5),
            frozen_stages=-1),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=3, in_channels=128)),
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
    init_student_from_teacher=True)

work_dir = 'work_dirs/demo_cls_riformer_distill'
