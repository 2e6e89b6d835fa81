# RMT-T + Semantic FPN, 80k iterations, ADE20K 512x512.
# Port of the official qhfan/RMT segmentation/configs/RMT/RMT_FPN_t_1x.py
# (mmseg 0.x) to mmseg 1.x. The other fpn_rmt_* configs inherit this one.
# Batch: 8 GPUs x 2 images = 16, as the official runs.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py'
]

custom_imports = dict(imports=['mmvitmix.models'], allow_failed_imports=False)
default_scope = 'mmseg'

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    # the base's ResNet `pretrained` would be handed to the backbone
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmvitmix.RMT',
        arch='t',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        # the official segmentation backbone hard-codes SyncBatchNorm in the
        # stem and the downsampling layers
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/rmt/RMT-T.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]),
    decode_head=dict(num_classes=150))

train_dataloader = dict(batch_size=2, num_workers=2)

# official: AdamW lr 1e-4, weight decay 1e-4, fp32, poly decay (power 0.9,
# min lr 1e-6) over 80k iterations, evaluation every 4k
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001),
    clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-6,
        power=0.9,
        begin=0,
        end=80000,
        by_epoch=False)
]
train_cfg = dict(max_iters=80000, val_interval=4000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=4000))

auto_scale_lr = dict(enable=False, base_batch_size=16)
