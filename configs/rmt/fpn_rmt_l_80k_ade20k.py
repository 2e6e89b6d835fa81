# RMT-L + Semantic FPN, 80k iterations, ADE20K (official RMT_FPN_l_1x.py).
_base_ = './fpn_rmt_t_80k_ade20k.py'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/rmt/RMT-L.pth')),
    neck=dict(in_channels=[112, 224, 448, 640]))
