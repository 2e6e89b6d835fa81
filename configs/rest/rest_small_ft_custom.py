# Fine-tune ResT-Small on a user data set (folder per class, see
# configs/_base_/datasets/custom_cls_224.py and the README): the official
# ImageNet-1k checkpoint is loaded into the backbone (its classifier is
# dropped by the converter) and a new linear head is trained with the short
# schedule of configs/_base_/schedules/finetune_30e_adamw.py.
#   python tools/train.py configs/rest/rest_small_ft_custom.py \
#       --cfg-options train_dataloader.dataset.data_root=PATH \
#       val_dataloader.dataset.data_root=PATH \
#       test_dataloader.dataset.data_root=PATH model.head.num_classes=N
_base_ = [
    '../_base_/datasets/custom_cls_224.py',
    '../_base_/schedules/finetune_30e_adamw.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)
default_scope = 'mmpretrain'

num_classes = 10  # the number of class folders of your data set

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmvitmix.ResT',
        arch='small',
        out_indices=(3, ),
        drop_path_rate=0.1,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/rest/rest_small.pth')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=num_classes,
        in_channels=512,
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, )))

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(
        type='CheckpointHook',
        interval=1,
        max_keep_ckpts=1,
        save_best='accuracy/top1'))
