_base_ = './fpn_riformer_s12_40k_ade20k.py'
pretrained = 'checkpoints/riformer/riformer-m36_32xb128_in1k_20230406-2fcb9d9b.pth'  # noqa: E501
model = dict(
    backbone=dict(arch='m36', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]))
