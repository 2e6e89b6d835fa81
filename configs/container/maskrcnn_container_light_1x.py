# Container-Light + Mask R-CNN, 1x schedule, COCO instance segmentation.
# The paper reports 45.1 box / 41.3 mask AP but its detection code was never
# released: this recipe is ours, mmdet's Swin Mask R-CNN 1x protocol
# (AdamW), see README.md. Model, optimiser and schedule are in
# _base_/maskrcnn_container_light.py (shared with
# maskrcnn_container_light_3x.py), the data is mmdet's COCO.
# Batch: 8 GPUs x 2 images = 16.
_base_ = [
    './_base_/maskrcnn_container_light.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/default_runtime_det.py'
]
