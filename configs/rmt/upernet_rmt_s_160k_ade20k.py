# RMT-S + UperNet, 160k iterations, ADE20K 512x512.
# Port of the official qhfan/RMT segmentation/configs/RMT/RMT_Uper_s_2x.py
# (mmseg 0.x) to mmseg 1.x. upernet_rmt_{b,l}_* inherit this one.
# Batch: 8 GPUs x 2 images = 16, as the official runs.
_base_ = [
    '../_base_/models/upernet_ade20k.py', '../_base_/datasets/ade20k_512.py',
    '../_base_/default_runtime_seg.py',
    '../_base_/schedules/schedule_160k_adamw.py'
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitmix.RMT',
        arch='s',
        drop_path_rate=0.15,
        out_indices=(0, 1, 2, 3),
        # the official segmentation backbone hard-codes SyncBatchNorm in the
        # stem and the downsampling layers
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/rmt/RMT-S.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))

# official (following UniFormer / CSWin): the schedule of the base (AdamW lr
# 6e-5, weight decay 0.01, none on norms, linear warm-up 1500 iters from 1e-6
# then poly decay (power 1.0) to 0 over 160k iterations) in fp16 with a
# static loss scale of 512, evaluation every 8k
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale=512.)
train_cfg = dict(val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
