# Container-Light + Semantic FPN, 80k iterations, ADE20K 512x512.
# No official segmentation recipe exists: this is ours, PVT's Semantic FPN
# protocol (AdamW lr 1e-4, weight decay 1e-4, poly 0.9, 80k iterations at
# batch 16), see README.md. Batch: 8 GPUs x 2 images = 16.
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
        type='mmvitmix.ContainerLight',
        arch='light',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        # BatchNorm in every block, synchronised over the 16 images of a
        # step (mmseg's convention for BN backbones); see docs/container.md
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        out_norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/container/container_light_in1k.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(num_classes=150))

train_dataloader = dict(batch_size=2, num_workers=2)

# PVT's Semantic FPN recipe: AdamW lr 1e-4, weight decay 1e-4, poly decay
# (power 0.9, to 0) over 80k iterations at batch 16; evaluation every 8k
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001),
    clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=0.9,
        begin=0,
        end=80000,
        by_epoch=False)
]
train_cfg = dict(max_iters=80000, val_interval=8000)
default_hooks = dict(
    checkpoint=dict(
        by_epoch=False, interval=8000, max_keep_ckpts=1, save_best='mIoU'))

auto_scale_lr = dict(enable=False, base_batch_size=16)
