# RetinaNet 1x (12 epochs) with a RIFormer-S12 backbone on COCO.
# Recipe of PoolFormer (sail-sg/poolformer, detection/configs/
# retinanet_poolformer_s12_fpn_1x_coco.py): mmdet's 1x schedule, AdamW
# lr 1e-4 (PoolFormer's RetinaNet configs use 1e-4, its Mask R-CNN ones
# 2e-4), weight decay 1e-4, 8 GPUs x 2 images. PoolFormer feeds the last
# three stages to the FPN (FORK_LAST3); here out_indices=(1, 2, 3) does it.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)

# MMPretrain's ImageNet-1k checkpoint, converted on the fly at load time
pretrained = 'checkpoints/riformer/riformer-s12_32xb128_in1k_20230406-6741ce71.pth'  # noqa: E501
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.RIFormer',
        arch='s12',
        out_indices=(1, 2, 3),
        drop_path_rate=0.,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        in_channels=[128, 320, 512],
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=1e-4))
auto_scale_lr = dict(base_batch_size=16)
