# ResT-Small + UperNet, 160k iterations, ADE20K 512x512.
# ResT v1 has no official segmentation recipe: this is the Swin UperNet
# protocol of mmseg (AdamW lr 6e-5, weight decay 0.01, none on norms,
# 1500-iteration warm-up, poly 1.0, 160k iterations:
# ../_base_/schedules/schedule_160k_adamw.py), see README.md.
# upernet_rest_{base,large}_160k_ade20k.py inherit this file.
# Batch: 8 GPUs x 2 images = 16.
_base_ = [
    '../_base_/models/upernet_ade20k.py', '../_base_/datasets/ade20k_512.py',
    '../_base_/default_runtime_seg.py',
    '../_base_/schedules/schedule_160k_adamw.py'
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
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
