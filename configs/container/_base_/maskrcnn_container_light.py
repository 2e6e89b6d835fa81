# Container-Light + Mask R-CNN without data: the model and our optimiser on
# mmdet's Swin Mask R-CNN 1x schedule (see ../README.md; the paper's
# detection code was never released). ../maskrcnn_container_light_1x.py and
# ../maskrcnn_container_light_3x.py add their data to it.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../../_base_/schedules/schedule_1x_warmup1k.py'
]

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

# AdamW lr 1e-4, weight decay 0.05, none on norms and on the mixing scalar
# w; schedule of the base (linear warm-up 1000 iters, x0.1 at epochs 8 and
# 11, 12 epochs)
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
