# ResT v2-Small + Mask R-CNN, 3x schedule: the official
# mask_rcnn_restv2_small_FPN_3x.yaml differs from the tiny one only in the
# backbone (drop path 0.2 in build_restv2_backbone).
_base_ = ['./maskrcnn_restv2_tiny_3x.py']

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.2,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/restv2/restv2_small_224.pth')))
