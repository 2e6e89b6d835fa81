# RMT-S + UperNet, 160k iterations, ADE20K 512x512.
# Port of the official qhfan/RMT segmentation/configs/RMT/RMT_Uper_s_2x.py
# (mmseg 0.x) to mmseg 1.x. upernet_rmt_{b,l}_* inherit this one.
# Batch: 8 GPUs x 2 images = 16, as the official runs.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py'
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
        arch='s',
        drop_path_rate=0.15,
        out_indices=(0, 1, 2, 3),
        # the official segmentation backbone hard-codes SyncBatchNorm in the
        # stem and the downsampling layers
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/rmt/RMT-S.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150))

train_dataloader = dict(batch_size=2, num_workers=2)

# official (following UniFormer / CSWin): AdamW lr 6e-5, weight decay 0.01,
# none on norms, fp16 with a static loss scale of 512, linear warm-up
# 1500 iters from 1e-6 then poly decay (power 1.0) to 0 over 160k iterations,
# evaluation every 8k
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale=512.,
    optimizer=dict(
        type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=160000,
        by_epoch=False)
]
train_cfg = dict(max_iters=160000, val_interval=8000)
default_hooks = dict(
    checkpoint=dict(
        by_epoch=False, interval=8000, max_keep_ckpts=1, save_best='mIoU'))

auto_scale_lr = dict(enable=False, base_batch_size=16)
