# Semantic FPN, 40k iterations on ADE20K, RIFormer-S12 backbone.
# Recipe of PoolFormer (sail-sg/poolformer, segmentation/configs/sem_fpn/
# PoolFormer/fpn_poolformer_s12_ade20k_40k.py): AdamW lr 2e-4, weight decay
# 1e-4, poly schedule (power 0.9, min lr 0), 40k iterations of 8 GPUs x 4
# images, 512x512 crops.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',
]
custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
# MMPretrain's ImageNet-1k checkpoint, converted on the fly at load time
pretrained = 'checkpoints/riformer/riformer-s12_32xb128_in1k_20230406-6741ce71.pth'  # noqa: E501
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmvitmix.RIFormer',
        arch='s12',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(num_classes=150))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999),
                   weight_decay=1e-4),
    clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        power=0.9,
        eta_min=0.0,
        begin=0,
        end=40000,
        by_epoch=False)
]
train_dataloader = dict(batch_size=4)
# PoolFormer's AlignResize: resize (not pad) the test image to multiples of 32
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=32)
