# ResT-Small + Mask R-CNN, 1x schedule, COCO instance segmentation.
# Port of the official wofmanaf/ResT object_detection/configs/ResTv1/
# mask_rcnn_rest_small_FPN_1x.yaml (with its Base-RCNN-FPN.yaml and
# train_net.py, detectron2) to mmdet 3.x; see README.md. Model, optimiser
# and schedule are in _base_/maskrcnn_rest_small.py (shared with
# maskrcnn_rest_small_3x.py); this file adds the official training data.
# maskrcnn_rest_base_1x.py inherits this file.
# Batch: 8 GPUs x 2 images = 16, as the official runs (IMS_PER_BATCH 16).
_base_ = [
    './_base_/maskrcnn_rest_small.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/default_runtime_det.py'
]

# detectron2's DatasetMapper with Base-RCNN-FPN.yaml: a random crop of 0.9 x
# 0.9 of the image (boxes recomputed from the masks, MASK_ON), then the
# shorter side resized to one of 640..800 (step 32, longer side <= 1333),
# then a horizontal flip
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='RandomCrop',
        crop_type='relative',
        crop_size=(0.9, 0.9),
        recompute_bbox=True,
        allow_negative_crop=True),
    dict(
        type='RandomChoiceResize',
        scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736),
                (1333, 768), (1333, 800)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
