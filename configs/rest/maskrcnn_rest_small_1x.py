# ResT-Small + Mask R-CNN, 1x schedule, COCO instance segmentation.
# Port of the official wofmanaf/ResT object_detection/configs/ResTv1/
# mask_rcnn_rest_small_FPN_1x.yaml (with its Base-RCNN-FPN.yaml and
# train_net.py, detectron2) to mmdet 3.x; see README.md.
# maskrcnn_rest_base_1x.py and maskrcnn_rest_small_3x.py inherit this file.
# Batch: 8 GPUs x 2 images = 16, as the official runs (IMS_PER_BATCH 16).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)
default_scope = 'mmdet'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.ResT',
        arch='small',
        # official build_rest_backbone: 0.1 for lite/small, 0.2 for base/large
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        # the official backbone uses plain BatchNorm2d in the stem and the
        # patch embeddings, in training mode (per-GPU statistics)
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/rest/rest_small.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))

# detectron2's DatasetMapper with Base-RCNN-FPN.yaml: a random crop of 0.9 x
# 0.9 of the image (boxes recomputed from the masks, MASK_ON), then the
# shorter side resized to one of 640..800 (step 32, longer side <= 1333),
# then a horizontal flip
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='RandomCrop',
        crop_type='relative',
        crop_size=(0.9, 0.9),
        recompute_bbox=True,
        allow_negative_crop=True),
    dict(
        type='RandomChoiceResize',
        scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736),
                (1333, 768), (1333, 800)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(
    batch_size=2, num_workers=2, dataset=dict(pipeline=train_pipeline))

# official: AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05 and none on
# norm layers (detectron2's WEIGHT_DECAY_NORM 0); "full_model" gradient
# clipping: one L2 norm over all gradients, at most 0.01
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.),
    clip_grad=dict(max_norm=0.01, norm_type=2))

# official: 90k iterations of 16 images, x0.1 at 60k and 80k, detectron2's
# linear warm-up of 1000 iterations from 0.001; as epochs (mmdet 1x): 12,
# x0.1 at 8 and 11
max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]

auto_scale_lr = dict(enable=False, base_batch_size=16)
default_hooks = dict(checkpoint=dict(max_keep_ckpts=1))
