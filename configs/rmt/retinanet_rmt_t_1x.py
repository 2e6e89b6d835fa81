# RMT-T + RetinaNet, 1x schedule, COCO detection.
# Port of the official qhfan/RMT detect/configs/RMT/retinanet_t_1x.py
# (mmdet 2.x) to mmdet 3.x. The other retinanet_rmt_* configs inherit this one.
# Batch: 8 GPUs x 2 images = 16, as the official runs.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::retinanet/retinanet_tta.py', '../_base_/default_runtime_det.py'
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.RMT',
        arch='t',
        drop_path_rate=0.1,
        # the official FPN reads all four stages with start_level=1, which
        # leaves stage 0's output norm unused (hence its
        # find_unused_parameters=True); requesting stages 1-3 only computes
        # the same features without the unused norm
        out_indices=(1, 2, 3),
        # the official detection backbone hard-codes SyncBatchNorm in the stem
        # and the downsampling layers
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/rmt/RMT-T.pth')),
    neck=dict(in_channels=[128, 256, 512], start_level=0))

# official: AdamW, fp16 with a static loss scale of 512; schedule (linear
# warm-up 500 iters, x0.1 at epochs 8 and 11, 12 epochs) from the mmdet base
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale=512.,
    optimizer=dict(type='AdamW', lr=0.0004, weight_decay=0.0001))
