_base_ = './upernet_riformer_s36_160k_ade20k.py'
pretrained = 'checkpoints/riformer/riformer-m36_32xb128_in1k_20230406-2fcb9d9b.pth'  # noqa: E501
model = dict(
    backbone=dict(arch='m36', init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
