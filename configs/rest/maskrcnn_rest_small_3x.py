# ResT-Small + Mask R-CNN, 3x schedule + multi-scale training, COCO.
# ResT v1 has no official 3x recipe: this is the common Swin / PVT protocol
# of mmdet (DETR-style multi-scale resize / crop policy of
# ../_base_/datasets/coco_instance_ms_3x.py, 36 epochs, x0.1 at 27 and 33)
# on top of the official 1x optimiser (_base_/maskrcnn_rest_small.py, shared
# with maskrcnn_rest_small_1x.py). maskrcnn_rest_base_3x.py inherits this
# file.
_base_ = [
    './_base_/maskrcnn_rest_small.py',
    '../_base_/datasets/coco_instance_ms_3x.py',
    '../_base_/default_runtime_det.py'
]

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1)
]
