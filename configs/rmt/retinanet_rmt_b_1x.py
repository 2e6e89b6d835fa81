# RMT-B + RetinaNet, 1x schedule, COCO (official retinanet_m_1x.py: the
# official code calls RMT-B "M2"/"m").
_base_ = './retinanet_rmt_t_1x.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/rmt/RMT-B.pth')),
    neck=dict(in_channels=[160, 320, 512]))
