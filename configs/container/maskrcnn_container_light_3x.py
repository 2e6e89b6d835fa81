# Container-Light + Mask R-CNN, 3x schedule + multi-scale training, COCO.
# Our recipe (no official one exists): mmdet's Swin Mask R-CNN 3x protocol
# (multi-scale resize / crop policy of DETR from
# ../_base_/datasets/coco_instance_ms_3x.py, 36 epochs, x0.1 at 27 and 33),
# with the model and optimiser of maskrcnn_container_light_1x.py
# (_base_/maskrcnn_container_light.py). See README.md.
_base_ = [
    './_base_/maskrcnn_container_light.py',
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
