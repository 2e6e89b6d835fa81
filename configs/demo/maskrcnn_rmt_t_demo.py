# Mask R-CNN with an RMT-T backbone trained FROM SCRATCH on the bundled demo
# shapes (data/demo/coco, made by tools/dataset_converters/make_demo_data.py).
# Sized to train on 2 CPU cores in minutes: 128x128 images, anchors of
# 16-256 px for the 15-60 px shapes, fewer proposals and sampled RoIs, a
# slimmer FPN/RoI head (128 channels), AdamW 2e-3 with warmup + cosine,
# batch 4 x 360 iterations. Time and mAP of `python tools/run_demo.py`, with
# the CPU they were measured on: README.md, "The two commands". Reproducible
# run to run on one machine and backend; another backend or build changes
# rounding and so the last digits.
# At 200 iterations, AdamW lr 1e-3 / 2e-3 / 4e-3 gave bbox mAP
# 0.289 / 0.368 / 0.143.
# Run it through tools/run_demo.py (`make demo`), or with any mmengine
# Runner-based train script, from the repository root.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']

custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)
default_scope = 'mmdet'

classes = ('circle', 'square', 'triangle')
num_classes = len(classes)
metainfo = dict(
    classes=classes, palette=[(220, 20, 60), (0, 130, 255), (20, 180, 40)])
img_size = 128
max_iters = 360
val_interval = max_iters

# --------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------
fpn_channels = 128
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='mmvitmix.RMT',
        arch='t',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        norm_cfg=dict(type='BN'),
        init_cfg=None),
    neck=dict(
        in_channels=[64, 128, 256, 512],
        out_channels=fpn_channels,
        num_outs=5),
    rpn_head=dict(
        in_channels=fpn_channels,
        feat_channels=fpn_channels,
        # objects are 15-60 px: anchors of 16/32/64/128/256 px
        anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=fpn_channels),
        bbox_head=dict(
            in_channels=fpn_channels,
            fc_out_channels=256,
            num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=fpn_channels),
        mask_head=dict(
            num_convs=2,
            in_channels=fpn_channels,
            conv_out_channels=fpn_channels,
            num_classes=num_classes)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(max_per_img=20)))

# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
dataset_type = 'CocoDataset'
data_root = 'data/demo/coco/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=16),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val.json',
    metric=['bbox', 'segm'],
    format_only=False)
test_evaluator = val_evaluator

# --------------------------------------------------------------------------
# schedule and runtime
# --------------------------------------------------------------------------
train_cfg = dict(
    _delete_=True,
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=val_interval)
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
        type='CosineAnnealingLR',
        T_max=max_iters - 50,
        eta_min=1e-5,
        by_epoch=False,
        begin=50,
        end=max_iters)
]
auto_scale_lr = dict(enable=False, base_batch_size=4)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=False,
        interval=max_iters,
        max_keep_ckpts=1,
        save_optimizer=False),
    visualization=dict(type='DetVisualizationHook', draw=False))
log_processor = dict(type='LogProcessor', window_size=10, by_epoch=False)
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
work_dir = 'work_dirs/demo'
