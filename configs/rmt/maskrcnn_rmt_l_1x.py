# RMT-L + Mask R-CNN, 1x schedule, COCO (official maskrcnn_l_1x.py).
_base_ = './maskrcnn_rmt_s_1x.py'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/rmt/RMT-L.pth')),
    neck=dict(in_channels=[112, 224, 448, 640]))

optim_wrapper = dict(optimizer=dict(lr=0.0002))
