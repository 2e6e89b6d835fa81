# ResT-Base + RetinaNet, 1x schedule, COCO (official
# retinanet_rest_base_FPN_1x.yaml).
_base_ = './retinanet_rest_small_1x.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint='checkpoints/rest/rest_base.pth')),
    neck=dict(in_channels=[192, 384, 768]))
