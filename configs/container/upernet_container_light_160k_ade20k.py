# Container-Light + UperNet, 160k iterations, ADE20K 512x512.
# No official segmentation recipe exists: this is ours, the Swin UperNet
# protocol of mmseg (AdamW lr 6e-5, weight decay 0.01, 1500-iter warm-up,
# poly 1.0, 160k iterations: ../_base_/schedules/schedule_160k_adamw.py), see
# README.md. Batch: 8 GPUs x 2 images = 16.
_base_ = [
    '../_base_/models/upernet_ade20k.py', '../_base_/datasets/ade20k_512.py',
    '../_base_/default_runtime_seg.py',
    '../_base_/schedules/schedule_160k_adamw.py'
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
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))

# no weight decay on the mixing scalar w either (the base already has none on
# norms)
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'mix_weight': dict(decay_mult=0.)}))
