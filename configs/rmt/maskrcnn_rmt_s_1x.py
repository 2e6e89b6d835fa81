# RMT-S + Mask R-CNN, 1x schedule, COCO (official maskrcnn_s_1x.py).
_base_ = './maskrcnn_rmt_t_1x.py'

model = dict(
    backbone=dict(
        arch='s',
        drop_path_rate=0.15,
        init_cfg=dict(checkpoint='checkpoints/rmt/RMT-S.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
