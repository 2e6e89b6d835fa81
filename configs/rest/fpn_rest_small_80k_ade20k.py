# ResT-Small + Semantic FPN, 80k iterations, ADE20K 512x512.
# ResT v1 has no official segmentation recipe: this is PVT's Semantic FPN
# protocol (AdamW lr 1e-4, weight decay 1e-4, poly 0.9, 80k iterations) as
# the official RMT configs run it (../_base_/schedules/schedule_80k_adamw.py),
# see README.md. fpn_rest_{base,large}_80k_ade20k.py inherit this file.
# Batch: 8 GPUs x 2 images = 16.
_base_ = [
    '../_base_/models/fpn_ade20k.py', '../_base_/datasets/ade20k_512.py',
    '../_base_/default_runtime_seg.py',
    '../_base_/schedules/schedule_80k_adamw.py'
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.ResT',
        arch='small',
        # the official detection values (0.1 lite/small, 0.2 base/large)
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        # BatchNorm of the stem and patch embeddings synchronised over the
        # 16 images of a step (mmseg's convention for BN backbones)
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/rest/rest_small.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
