# RMT-B + Cascade Mask R-CNN, 3x schedule + multi-scale training, COCO
# (official casrcnn_m_3x.py): the RMT-S cascade 3x setting with the RMT-B
# backbone (drop path 0.4) and the official lr of 2e-4.
_base_ = './cascade_maskrcnn_rmt_s_3x.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/rmt/RMT-B.pth')),
    neck=dict(in_channels=[80, 160, 320, 512]))

optim_wrapper = dict(optimizer=dict(lr=0.0002))
