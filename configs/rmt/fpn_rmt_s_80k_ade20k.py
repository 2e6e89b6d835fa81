# RMT-S + Semantic FPN, 80k iterations, ADE20K (official RMT_FPN_s_1x.py).
_base_ = './fpn_rmt_t_80k_ade20k.py'

model = dict(
    backbone=dict(
        arch='s',
        drop_path_rate=0.15,
        init_cfg=dict(checkpoint='checkpoints/rmt/RMT-S.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
