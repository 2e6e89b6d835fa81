# RMT-S + Mask R-CNN, 1x schedule, COCO instance segmentation.
# Port of the official qhfan/RMT detect/configs/RMT/maskrcnn_s_1x.py
# (mmdet 2.x) to mmdet 3.x: model, optimiser and schedule in
# _base_/maskrcnn_rmt_s.py (shared with maskrcnn_rmt_s_3x.py), mmdet's COCO
# data. The other maskrcnn_rmt_*_1x configs inherit this one.
# Batch: 8 GPUs x 2 images = 16, as the official runs.
_base_ = [
    './_base_/maskrcnn_rmt_s.py', 'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/default_runtime_det.py'
]
