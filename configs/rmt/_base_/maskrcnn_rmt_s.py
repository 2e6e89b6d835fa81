# RMT-S + Mask R-CNN without data: the model and the official optimiser on
# mmdet's 1x schedule, ported from the official qhfan/RMT
# detect/configs/RMT/maskrcnn_s_1x.py (mmdet 2.x) to mmdet 3.x.
# ../maskrcnn_rmt_s_1x.py and ../maskrcnn_rmt_s_3x.py add their data to it.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/schedules/schedule_1x.py'
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.RMT',
        arch='s',
        drop_path_rate=0.15,
        out_indices=(0, 1, 2, 3),
        # the official detection backbone hard-codes SyncBatchNorm in the stem
        # and the downsampling layers
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/rmt/RMT-S.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))

# official: AdamW, no weight decay on norms, fp16 with dynamic loss scale;
# schedule (linear warm-up 500 iters, x0.1 at epochs 8 and 11, 12 epochs)
# is the one of the mmdet base
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='AdamW', lr=0.0004, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
