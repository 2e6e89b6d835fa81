# ResT v2-Tiny + UperNet, 160k iterations, ADE20K 512x512.
# Port of the official wofmanaf/ResT semantic_segmentation/configs/ResTv2/
# upernet_restv2_tiny_512_160k_ade20k.py (mmseg 0.x) to mmseg 1.x: AdamW
# lr 6e-5, weight decay 0.01, none on norms, 1500-iteration linear warm-up
# from 1e-6, poly 1.0 (../_base_/schedules/schedule_160k_adamw.py); UperNet
# channels 512, auxiliary FCN head on stage 3. See README.md.
# Batch: 8 GPUs x 2 images = 16.
_base_ = [
    '../_base_/models/upernet_ade20k.py', '../_base_/datasets/ade20k_512.py',
    '../_base_/default_runtime_seg.py',
    '../_base_/schedules/schedule_160k_adamw.py'
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.ResTV2',
        arch='tiny',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        # the official stem's BatchNorm2d; synchronised over the 16 images
        # of a step (mmseg's convention for BN backbones)
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/restv2/restv2_tiny_224.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
