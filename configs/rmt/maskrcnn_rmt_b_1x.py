# RMT-B + Mask R-CNN, 1x schedule, COCO (official maskrcnn_m_1x.py: the
# official code calls RMT-B "M2"/"m").
_base_ = './maskrcnn_rmt_s_1x.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/rmt/RMT-B.pth')),
    neck=dict(in_channels=[80, 160, 320, 512]))
