# Container-Light + Mask R-CNN, 1x schedule, COCO instance segmentation.
# The paper reports 45.1 box / 41.3 mask AP but its detection code was never
# released: this recipe is ours, mmdet's Swin Mask R-CNN 1x protocol
# (AdamW), see README.md. maskrcnn_container_light_3x.py inherits this file.
# Batch: 8 GPUs x 2 images = 16.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)
default_scope = 'mmdet'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.ContainerLight',
        arch='light',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        # BatchNorm in every block: keep the ImageNet statistics frozen at
        # 2 images per GPU (mmdet's convention for BN backbones); the affine
        # weights still train. See docs/container.md.
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/container/container_light_in1k.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))

train_dataloader = dict(batch_size=2, num_workers=2)

# AdamW lr 1e-4, weight decay 0.05, none on norms and on the mixing scalar
# w; linear warm-up 1000 iters, x0.1 at epochs 8 and 11, 12 epochs
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.),
            'mix_weight': dict(decay_mult=0.)
        }))
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
