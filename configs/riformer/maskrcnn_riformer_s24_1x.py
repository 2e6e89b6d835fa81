_base_ = './maskrcnn_riformer_s12_1x.py'
pretrained = 'checkpoints/riformer/riformer-s24_32xb128_in1k_20230406-fdab072a.pth'  # noqa: E501
model = dict(
    backbone=dict(arch='s24', init_cfg=dict(checkpoint=pretrained)))
