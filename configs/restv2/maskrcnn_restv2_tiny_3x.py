# ResT v2-Tiny + Mask R-CNN, 3x schedule, COCO instance segmentation.
# Port of the official wofmanaf/ResT object_detection/configs/ResTv2/
# mask_rcnn_restv2_tiny_FPN_3x.yaml (with its Base-RCNN-FPN.yaml and
# train_net.py, detectron2) to mmdet 3.x; see README.md.
# maskrcnn_restv2_{small,base}_3x.py inherit this file.
# Batch: 8 GPUs x 2 images = 16, as the official runs (IMS_PER_BATCH 16).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/default_runtime_det.py'
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.ResTV2',
        arch='tiny',
        # official build_restv2_backbone: 0.1 / 0.2 / 0.3 for tiny / small /
        # base
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        # the official stem uses plain BatchNorm2d, in training mode
        # (per-GPU statistics)
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/restv2/restv2_tiny_224.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))

# the yaml's input: RGB with the ImageNet mean / std (mmdet's default
# preprocessor: bgr_to_rgb, the same mean / std), padded to multiples of 32.
# Training (detectron2 DatasetMapper): a random crop of 0.9 x 0.9 of the
# image (CROP relative, applied first), the shorter side resized to one of
# MIN_SIZE_TRAIN (longer side <= 1333), horizontal flip
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomCrop', crop_type='relative', crop_size=(0.9, 0.9)),
    dict(
        type='RandomChoiceResize',
        scales=[(1333, s)
                for s in (480, 512, 534, 576, 640, 672, 704, 736, 768, 800)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# official: 270k iterations of 16 images (36.5 epochs of COCO train2017's
# 118287 images), x0.1 at 210k and 250k (epochs 28.4 and 33.8),
# detectron2's linear warm-up of 1000 iterations from 0.001
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

# official (train_net.py: detectron2's get_default_optimizer_params): AdamW
# lr 1e-4, betas (0.9, 0.999), weight decay 0.05, none on norm layers
# (WEIGHT_DECAY_NORM 0) and 1e-4 on every bias (WEIGHT_DECAY_BIAS, bound to
# detectron2's default WEIGHT_DECAY; applied after the norm rule, as
# mmengine applies the longer key first), "full_model" gradient clipping at
# L2 norm 0.01, mixed precision (SOLVER.AMP). The official output norms
# norm_{k} are a custom LayerNorm class that detectron2 does not recognise
# as a norm: weight decay 0.05 on their weights, here too.
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
            'backbone.norm0.weight': dict(decay_mult=1.),
            'backbone.norm1.weight': dict(decay_mult=1.),
            'backbone.norm2.weight': dict(decay_mult=1.),
            'backbone.norm3.weight': dict(decay_mult=1.),
        }),
    clip_grad=dict(max_norm=0.01, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=16)
