# Fine-tuning on a user data set (folder per class, see
# configs/_base_/datasets/custom_cls_224.py and each backbone's README), shared
# by the configs/<backbone>/*_ft_custom.py configs: they add the backbone
# (type, arch, drop path and the official ImageNet-1k checkpoint, whose
# classifier the converter drops) and this trains a new linear head on its
# pooled last stage with the short schedule of
# configs/_base_/schedules/finetune_30e_adamw.py.
#   python tools/train.py configs/<backbone>/<name>_ft_custom.py \
#       --cfg-options train_dataloader.dataset.data_root=PATH \
#       val_dataloader.dataset.data_root=PATH \
#       test_dataloader.dataset.data_root=PATH model.head.num_classes=N
_base_ = [
    './datasets/custom_cls_224.py',
    './schedules/finetune_30e_adamw.py',
    'mmpretrain::_base_/default_runtime.py',
]

custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)
default_scope = 'mmpretrain'

num_classes = 10  # the number of class folders of your data set

model = dict(
    type='ImageClassifier',
    backbone=dict(out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=num_classes,
        in_channels=512,  # the last stage's channels of every *_ft_custom
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
