# RMT-B + Semantic FPN, 80k iterations, ADE20K (official RMT_FPN_m_1x.py:
# the official code calls RMT-B "M2"/"m").
_base_ = './fpn_rmt_t_80k_ade20k.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/rmt/RMT-B.pth')),
    neck=dict(in_channels=[80, 160, 320, 512]))
