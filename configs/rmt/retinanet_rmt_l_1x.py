# RMT-L + RetinaNet, 1x schedule, COCO (official retinanet_l_1x.py).
_base_ = './retinanet_rmt_t_1x.py'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/rmt/RMT-L.pth')),
    neck=dict(in_channels=[224, 448, 640]))

optim_wrapper = dict(optimizer=dict(lr=0.0002))
