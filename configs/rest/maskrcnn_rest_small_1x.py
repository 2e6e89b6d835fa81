# ResT-Small + Mask R-CNN, 1x schedule, COCO instance segmentation.
# Port of the official wofmanaf/ResT (v1 commit 508e30b) d2/configs/
# COCO-InstanceSegmentation/mask_rcnn_rest_small_FPN_1x.yaml (with its
# Base-RCNN-FPN.yaml, defaults.py and train_net.py, detectron2) to mmdet
# 3.x; see README.md. Model, optimiser and schedule are in
# _base_/maskrcnn_rest_small.py (shared with maskrcnn_rest_small_3x.py);
# this file adds the official training data.
# maskrcnn_rest_base_1x.py inherits this file.
# Batch: 8 GPUs x 2 images = 16, as the official runs (IMS_PER_BATCH 16).
_base_ = [
    './_base_/maskrcnn_rest_small.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/default_runtime_det.py'
]

# detectron2's DatasetMapper with the v1 Base-RCNN-FPN.yaml (commit
# 508e30b): the shorter side resized to one of 640..800 (step 32, longer
# side <= 1333), then a horizontal flip; no crop (the relative 0.9 x 0.9 crop
# came with the ResT v2 configs)
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='RandomChoiceResize',
        scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736),
                (1333, 768), (1333, 800)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
