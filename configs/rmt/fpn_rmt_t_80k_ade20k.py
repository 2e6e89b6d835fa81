# RMT-T + Semantic FPN, 80k iterations, ADE20K 512x512.
# Port of the official qhfan/RMT segmentation/configs/RMT/RMT_FPN_t_1x.py
# (mmseg 0.x) to mmseg 1.x; the official schedule is
# ../_base_/schedules/schedule_80k_adamw.py. The other fpn_rmt_* configs
# inherit this one.
# Batch: 8 GPUs x 2 images = 16, as the official runs.
_base_ = [
    '../_base_/models/fpn_ade20k.py', '../_base_/datasets/ade20k_512.py',
    '../_base_/default_runtime_seg.py',
    '../_base_/schedules/schedule_80k_adamw.py'
]

model = dict(
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
    neck=dict(in_channels=[64, 128, 256, 512]))
