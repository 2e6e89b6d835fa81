# COCO instance segmentation with the multi-scale training of the 3x Mask
# R-CNN recipes: the AutoAugment policy of DETR / Sparse R-CNN used by the
# official RMT maskrcnn_{s,m}_3x.py (mmdet 2.x) and by mmdet's Swin / PVT 3x
# configs. Written with the mmdet 3.x transforms: AutoAugment ->
# RandomChoice, Resize(multiscale_mode='value') -> RandomChoiceResize;
# `override=True` is not needed since mmdet 3.x Resize always rescales from
# the current image. Everything else (test pipeline, 2 images per GPU) is
# mmdet's coco_instance.py.
_base_ = 'mmdet::_base_/datasets/coco_instance.py'

ms_scales = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333),
             (640, 1333), (672, 1333), (704, 1333), (736, 1333), (768, 1333),
             (800, 1333)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=ms_scales,
                  keep_ratio=True)],
            [
                dict(
                    type='RandomChoiceResize',
                    scales=[(400, 1333), (500, 1333), (600, 1333)],
                    keep_ratio=True),
                dict(
                    type='RandomCrop',
                    crop_type='absolute_range',
                    crop_size=(384, 600),
                    allow_negative_crop=True),
                dict(
                    type='RandomChoiceResize', scales=ms_scales,
                    keep_ratio=True)
            ],
        ]),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
