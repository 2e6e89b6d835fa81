# A user classification data set in MMPretrain's CustomDataset layout, one
# folder per class (class names = sorted folder names):
#   data/custom/train/<class>/*.jpg   data/custom/val/<class>/*.jpg
# Point a config at another folder with
#   --cfg-options train_dataloader.dataset.data_root=PATH \
#                 val_dataloader.dataset.data_root=PATH \
#                 test_dataloader.dataset.data_root=PATH \
#                 model.head.num_classes=N
# 224x224 inputs, ImageNet normalisation (as the ImageNet checkpoints), light
# augmentation for short fine-tuning: random resized crop and flip.
dataset_type = 'CustomDataset'
data_root = 'data/custom'
data_preprocessor = dict(
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=256,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=4,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix='train',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=32,
    num_workers=4,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix='val',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
