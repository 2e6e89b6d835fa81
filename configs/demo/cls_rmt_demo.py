# Shape classification (circle / square / triangle) with a tiny RMT
# trained FROM SCRATCH on crops of the bundled demo shapes, on the CPU in
# one to two minutes. Make the crops, train (the last validation prints
# accuracy/top1; chance is 33%), test:
#   python tools/dataset_converters/make_demo_cls.py --out data/demo/cls
#   python tools/train.py configs/demo/cls_rmt_demo.py
#   python tools/test.py configs/demo/cls_rmt_demo.py \
#       work_dirs/demo_cls_rmt/epoch_6.pth
# tests/test_tools/test_cls_demo.py runs this config end to end.
_base_ = ['mmpretrain::_base_/default_runtime.py']

custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)
default_scope = 'mmpretrain'

classes = ('circle', 'square', 'triangle')
data_root = 'data/demo/cls'

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmvitmix.RMT',
        # a half-width, 5-block RMT (RMT-T: 64-512 channels, 14 blocks)
        arch=dict(
            embed_dims=[32, 64, 128, 256],
            depths=[1, 1, 2, 1],
            num_heads=[2, 2, 4, 8],
            init_values=[2, 2, 2, 2],
            heads_ranges=[4, 4, 6, 6],
            mlp_ratios=[3, 3, 3, 3],
            chunkwise_recurrents=[True, True, False, False],
            layerscales=[False, False, False, False],
            layer_init_values=1e-6),
        out_indices=(3, ),
        drop_path_rate=0.0,
        init_cfg=None),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=len(classes),
        in_channels=256,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )))

data_preprocessor = dict(
    num_classes=len(classes),
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64)),
    dict(type='RandomFlip', prob=[0.25, 0.25],
         direction=['horizontal', 'vertical']),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64)),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        data_prefix='train',
        classes=classes,
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        data_prefix='val',
        classes=classes,
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# 767 training crops, 24 iterations per epoch, 6 epochs
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    paramwise_cfg=dict(flat_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, end=10),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=True,
        begin=0,
        end=6,
        convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=6, val_interval=6)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=6, max_keep_ckpts=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0, deterministic=False)
work_dir = 'work_dirs/demo_cls_rmt'
