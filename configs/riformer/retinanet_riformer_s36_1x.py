_base_ = './retinanet_riformer_s12_1x.py'
pretrained = 'checkpoints/riformer/riformer-s36_32xb128_in1k_20230406-fdfcd3b0.pth'  # noqa: E501
model = dict(
    backbone=dict(arch='s36', init_cfg=dict(checkpoint=pretrained)))
