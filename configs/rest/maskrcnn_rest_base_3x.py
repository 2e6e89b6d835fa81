# ResT-Base + Mask R-CNN, 3x schedule + multi-scale training, COCO
# (the recipe of maskrcnn_rest_small_3x.py with the base backbone).
_base_ = './maskrcnn_rest_small_3x.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint='checkpoints/rest/rest_base.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
