# ResT-Small + RetinaNet, 1x schedule, COCO detection.
# Port of the official wofmanaf/ResT (v1 commit 508e30b) d2/configs/
# COCO-Detection/retinanet_rest_small_FPN_1x.yaml (with its
# Base-RetinaNet.yaml, defaults.py and train_net.py, detectron2) to mmdet
# 3.x; see README.md.
# retinanet_rest_base_1x.py inherits this file.
# Batch: 8 GPUs x 2 images = 16, as the official runs (IMS_PER_BATCH 16).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    # official: 90k iterations of 16 images, x0.1 at 60k and 80k,
    # detectron2's linear warm-up of 1000 iterations from 0.001; as epochs
    # (mmdet 1x): 12, x0.1 at 8 and 11
    '../_base_/schedules/schedule_1x_warmup1k.py',
    'mmdet::retinanet/retinanet_tta.py', '../_base_/default_runtime_det.py'
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.ResT',
        arch='small',
        # official build_rest_backbone: 0.1 for lite/small, 0.2 for base/large
        drop_path_rate=0.1,
        # official OUT_FEATURES: stage2..stage4
        out_indices=(1, 2, 3),
        # the official backbone uses plain BatchNorm2d in the stem and the
        # patch embeddings, in training mode (per-GPU statistics)
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/rest/rest_small.pth')),
    # P3-P5 from stages 2-4, P6 from stage 4 and P7 from ReLU(P6), as
    # detectron2's LastLevelP6P7(in_feature='stage4')
    neck=dict(
        in_channels=[128, 256, 512],
        start_level=0,
        relu_before_extra_convs=True))

# Base-RetinaNet.yaml: the shorter side resized to one of 640..800 (step 32,
# longer side <= 1333), horizontal flip; no crop
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='RandomChoiceResize',
        scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736),
                (1333, 768), (1333, 800)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# official (detectron2 at the ResT v1 commit 508e30b): AdamW lr 1e-4, betas
# (0.9, 0.999), weight decay 0.05, none on norm weights, 1e-4 on every bias
# (see _base_/maskrcnn_rest_small.py), no gradient clipping
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            '.bias': dict(decay_mult=1e-4 / 0.05),
            'norm': dict(decay_mult=0.)
        }))
