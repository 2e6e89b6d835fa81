# RMT-T + Mask R-CNN, 1x schedule, COCO (official maskrcnn_t_1x.py).
_base_ = './maskrcnn_rmt_s_1x.py'

model = dict(
    backbone=dict(
        arch='t',
        drop_path_rate=0.1,
        init_cfg=dict(checkpoint='checkpoints/rmt/RMT-T.pth')))
