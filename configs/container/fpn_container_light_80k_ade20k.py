# Container-Light + Semantic FPN, 80k iterations, ADE20K 512x512.
# No official segmentation recipe exists: this is ours, PVT's Semantic FPN
# protocol (AdamW lr 1e-4, weight decay 1e-4, poly 0.9, 80k iterations at
# batch 16), see README.md. Batch: 8 GPUs x 2 images = 16.
_base_ = [
    '../_base_/models/fpn_ade20k.py', '../_base_/datasets/ade20k_512.py',
    '../_base_/default_runtime_seg.py',
    '../_base_/schedules/schedule_80k_adamw.py'
]

model = dict(
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
    neck=dict(in_channels=[64, 128, 320, 512]))

# PVT's Semantic FPN recipe: the AdamW of the base (lr 1e-4, weight decay
# 1e-4) with the poly decay (power 0.9) going to 0 over 80k iterations at
# batch 16; evaluation every 8k, keeping the latest and the best checkpoints
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=80000,
         by_epoch=False)
]
train_cfg = dict(val_interval=8000)
default_hooks = dict(
    checkpoint=dict(interval=8000, max_keep_ckpts=1, save_best='mIoU'))
