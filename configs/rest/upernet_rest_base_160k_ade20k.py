# ResT-Base + UperNet, 160k iterations, ADE20K (the recipe of
# upernet_rest_small_160k_ade20k.py with the base backbone).
_base_ = './upernet_rest_small_160k_ade20k.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint='checkpoints/rest/rest_base.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
