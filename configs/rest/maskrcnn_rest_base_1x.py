# ResT-Base + Mask R-CNN, 1x schedule, COCO (official
# mask_rcnn_rest_base_FPN_1x.yaml).
_base_ = './maskrcnn_rest_small_1x.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint='checkpoints/rest/rest_base.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
