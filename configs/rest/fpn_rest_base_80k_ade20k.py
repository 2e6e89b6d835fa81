# ResT-Base + Semantic FPN, 80k iterations, ADE20K (the recipe of
# fpn_rest_small_80k_ade20k.py with the base backbone).
_base_ = './fpn_rest_small_80k_ade20k.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint='checkpoints/rest/rest_base.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
