# RMT-L + UperNet, 160k iterations, ADE20K (official RMT_Uper_l_2x.py).
_base_ = './upernet_rmt_s_160k_ade20k.py'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/rmt/RMT-L.pth')),
    decode_head=dict(in_channels=[112, 224, 448, 640]),
    auxiliary_head=dict(in_channels=448))
