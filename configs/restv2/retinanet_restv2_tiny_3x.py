# ResT v2-Tiny + RetinaNet, 3x schedule, COCO detection.
# Port of the official wofmanaf/ResT object_detection/configs/ResTv2/
# retinanet_restv2_tiny_FPN_3x.yaml (with Base-RetinaNet.yaml, detectron2)
# to mmdet 3.x. The released yaml still names a Swin builder
# (build_retinanet_swint_fpn_backbone, SWINT.OUT_FEATURES stage3-stage5);
# this is what its RESTV2 counterpart, build_retinanet_restv2_fpn_backbone,
# builds: FPN on stages 2-4 (strides 8-32) and P6 / P7 from stage 4. See
# README.md. Batch: 8 GPUs x 2 images = 16 (IMS_PER_BATCH 16).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::retinanet/retinanet_tta.py', '../_base_/default_runtime_det.py'
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.ResTV2',
        arch='tiny',
        drop_path_rate=0.1,
        out_indices=(1, 2, 3),
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/restv2/restv2_tiny_224.pth')),
    # P3-P5 from stages 2-4, P6 from stage 4 and P7 from ReLU(P6), as
    # detectron2's LastLevelP6P7(in_feature='stage4')
    neck=dict(
        in_channels=[192, 384, 768],
        start_level=0,
        relu_before_extra_convs=True))

# the yaml: RGB input with the ImageNet mean / std; the shorter side resized
# to one of 384..1024 (longer side <= 1333), horizontal flip; no crop
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='RandomChoiceResize',
        scales=[(1333, s) for s in (384, 512, 640, 768, 896, 1024)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# official: 270k iterations of 16 images, x0.1 at 210k and 250k, warm-up
# 1000 iterations from 0.001 (see maskrcnn_restv2_tiny_3x.py for the epochs)
max_epochs = 36
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[28, 34],
        gamma=0.1)
]

# official: AdamW lr 1e-4, weight decay 0.05, none on norms, 1e-4 on biases
# (as maskrcnn_restv2_tiny_3x.py), mixed precision; Base-RetinaNet.yaml
# enables no gradient clipping
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            '.bias': dict(decay_mult=1e-4 / 0.05),
            'norm': dict(decay_mult=0.),
            # the official norm_{k} (a custom class, no detectron2 norm)
            'backbone.norm1.weight': dict(decay_mult=1.),
            'backbone.norm2.weight': dict(decay_mult=1.),
            'backbone.norm3.weight': dict(decay_mult=1.),
        }))
auto_scale_lr = dict(enable=False, base_batch_size=16)
