# RMT-S + Mask R-CNN, 3x schedule + multi-scale training, COCO
# (official maskrcnn_s_3x.py): the model and optimiser of
# maskrcnn_rmt_s_1x.py (_base_/maskrcnn_rmt_s.py) with the multi-scale
# resize / crop pipeline of ../_base_/datasets/coco_instance_ms_3x.py.
# maskrcnn_rmt_b_3x.py inherits this file.
# Batch: 8 GPUs x 2 images = 16, as the official runs.
_base_ = [
    './_base_/maskrcnn_rmt_s.py', '../_base_/datasets/coco_instance_ms_3x.py',
    '../_base_/default_runtime_det.py'
]

# official: linear warm-up 500 iters, x0.1 at epochs 27 and 33, 36 epochs
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1)
]
