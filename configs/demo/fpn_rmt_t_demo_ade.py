# Semantic FPN with an RMT-T backbone trained FROM SCRATCH on the bundled
# ADE20K-layout demo shapes (data/demo/ade, made by
# tools/dataset_converters/make_demo_data.py). Label maps follow ADE20K:
# 0 is unlabelled (here the 1-pixel rim of each shape) and is ignored through
# reduce_zero_label=True; 1..4 become background/circle/square/triangle.
# A short CPU schedule on 128x128 images (batch 8 x 600 iterations, AdamW
# 2e-3), minutes on 2 CPU cores; run from the repository root with an
# mmengine Runner-based train script. Seed 0 gave mIoU 56.1 (background
# 99.5, circle 60.8, square 22.1, triangle 41.9); 300 iterations: 42.4.
_base_ = ['mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py']

custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)
default_scope = 'mmseg'

classes = ('background', 'circle', 'square', 'triangle')
metainfo = dict(
    classes=classes,
    palette=[[120, 120, 120], [220, 20, 60], [0, 130, 255], [20, 180, 40]])
img_size = 128
crop_size = (img_size, img_size)
max_iters = 600
norm_cfg = dict(type='BN', requires_grad=True)

# --------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='mmvitmix.RMT',
        arch='t',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        norm_cfg=dict(type='BN'),
        init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=128),
    decode_head=dict(
        in_channels=[128, 128, 128, 128],
        channels=64,
        num_classes=len(classes),
        norm_cfg=norm_cfg))

# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
dataset_type = 'BaseSegDataset'
data_root = 'data/demo/ade'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),  # reduce_zero_label comes from the dataset
    dict(
        type='RandomResize',
        scale=crop_size,
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadAnnotations'),  # reduce_zero_label comes from the dataset
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        img_suffix='.jpg',
        seg_map_suffix='.png',
        reduce_zero_label=True,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        img_suffix='.jpg',
        seg_map_suffix='.png',
        reduce_zero_label=True,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# --------------------------------------------------------------------------
# schedule and runtime
# --------------------------------------------------------------------------
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999),
                   weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(
        type='PolyLR',
        eta_min=1e-5,
        power=1.0,
        begin=50,
        end=max_iters,
        by_epoch=False)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=max_iters,
        max_keep_ckpts=1),
    visualization=dict(type='SegVisualizationHook', draw=False))
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
work_dir = 'work_dirs/demo_ade'
