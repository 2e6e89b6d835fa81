# MMPretrain ImageClassifier with the DeiT losses and batch augmentations:
# global average pooling of the backbone's last output, a linear head,
# label smoothing 0.1, Mixup (alpha 0.8) or CutMix (alpha 1.0) per batch
# (timm Mixup: mixup 0.8, cutmix 1.0, prob 1.0, switch prob 0.5).
# Each config adds `model.backbone` and sets `model.head.in_channels`.
# The preprocessor is given here too (the same as MMPretrain's top-level
# one): Mixup / CutMix need its num_classes wherever the model is built.
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        num_classes=1000,
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))
