# RMT-B + UperNet, 160k iterations, ADE20K (official RMT_Uper_m_2x.py: the
# official code calls RMT-B "M2"/"m").
_base_ = './upernet_rmt_s_160k_ade20k.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/rmt/RMT-B.pth')),
    decode_head=dict(in_channels=[80, 160, 320, 512]),
    auxiliary_head=dict(in_channels=320))
