# Container-Light + RetinaNet, 1x schedule, COCO detection.
# The paper reports 43.8 box AP but its detection code was never released:
# this recipe is ours, mmdet's PVT RetinaNet 1x protocol (AdamW), see
# README.md.
# Batch: 8 GPUs x 2 images = 16.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::retinanet/retinanet_tta.py', '../_base_/default_runtime_det.py'
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.ContainerLight',
        arch='light',
        drop_path_rate=0.1,
        # stages 1-3 feed the FPN (Swin's RetinaNet layout); stage 0's
        # output norm is then not built
        out_indices=(1, 2, 3),
        # BatchNorm in every block: keep the ImageNet statistics frozen at
        # 2 images per GPU (mmdet's convention for BN backbones); the affine
        # weights still train. See docs/container.md.
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/container/container_light_in1k.pth')),
    neck=dict(in_channels=[128, 320, 512], start_level=0))

# mmdet's PVT RetinaNet recipe: AdamW lr 1e-4, weight decay 1e-4; schedule
# (linear warm-up 500 iters, x0.1 at epochs 8 and 11, 12 epochs) from the
# mmdet base
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001))
